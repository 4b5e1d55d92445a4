/// Generators shared by the property suites.
module BitBoxSync.Properties.Generators

open System
open FsCheck
open FsCheck.FSharp
open Expecto
open BitBoxSync.Protocol

/// Property settings: enough cases to find encoding corner cases, bounded for CI time.
let config = { FsCheckConfig.defaultConfig with maxTest = 500 }

/// A property over values from `gen`.
let forAll (gen: Gen<'a>) (body: 'a -> bool) : Property = Prop.forAll (Arb.fromGen gen) body

/// Any byte.
let byteGen: Gen<byte> = Gen.choose (0, 255) |> Gen.map byte

/// Exactly `n` random bytes.
let bytesOf (n: int) : Gen<byte[]> = Gen.arrayOfLength n byteGen

/// Between `lo` and `hi` random bytes.
let bytesBetween (lo: int) (hi: int) : Gen<byte[]> = Gen.choose (lo, hi) |> Gen.bind bytesOf

/// A value of kind 'K from random bytes of a valid length.
let binOf<'K when 'K :> IBinaryKind> : Gen<Bin<'K>> =
    let s = Bin.spec<'K>()
    let hi = min s.MaxLength (s.MinLength + 64)

    bytesBetween s.MinLength hi
    |> Gen.map (fun b ->
        // A kind with an extra format rule (the wrapped DEK: version 1, 97 bytes) gets a valid shape.
        let b =
            if s.Check b = None then
                b
            else
                Array.init Limits.WrappedDekLengthV1 (fun i ->
                    if i = 0 then 1uy
                    elif b.Length = 0 then byte i
                    else b[i % b.Length])

        match Bin.ofBytes<'K> b with
        | Ok v -> v
        | Error e -> failwithf "generator produced an invalid %s: %s" s.Field e.Message)

/// Strings over an alphabet that reaches the parsers' interesting branches.
let interestingString: Gen<string> =
    let alphabet =
        "abcdefABCDEF0123456789=+/-_%&#?:;@[]. \t\r\n\u0000é\u007f" |> Seq.toArray

    Gen.choose (0, 40)
    |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.elements alphabet))
    |> Gen.map String

/// Any string (FsCheck's default), or one over the interesting alphabet.
let anyString: Gen<string> =
    Gen.oneof [ ArbMap.defaults |> ArbMap.generate<string>; interestingString ]
    |> Gen.map (fun s -> if isNull s then "" else s)

/// Applies one random edit (delete, insert, replace) to a string.
let mutate (s: string) : Gen<string> =
    let chars = "=&#?%:;+/-_0aA1 .@" |> Seq.toArray

    gen {
        let! i = Gen.choose (0, max 0 (s.Length - 1))
        let! c = Gen.elements chars
        let! op = Gen.choose (0, 3)

        return
            match op with
            | _ when s.Length = 0 -> string c
            | 0 -> s.Remove(i, 1)
            | 1 -> s.Insert(i, string c)
            | 2 -> s.Remove(i, 1).Insert(i, string c)
            | _ -> s.Substring(0, i)
    }

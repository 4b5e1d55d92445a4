/// Laws of server origins and invite URIs: the parsers never throw, every encoder output parses
/// back to the same token, and whatever a parser accepts is exactly what the encoder produces.
module BitBoxSync.Properties.InviteProperties

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync.Protocol
open BitBoxSync.Properties.Generators

let private label =
    let chars = "abcdefghijklmnopqrstuvwxyz0123456789" |> Seq.toArray

    Gen.choose (1, 12)
    |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.elements chars))
    |> Gen.map String

let private originGen: Gen<string> =
    gen {
        let! labels = Gen.choose (1, 4) |> Gen.bind (fun n -> Gen.listOfLength n label)

        let! port =
            Gen.oneof
                [ Gen.constant ""; Gen.choose (1, 65535) |> Gen.map (fun p -> ":" + string p) ]

        let! scheme = Gen.elements [ "https"; "HTTPS"; "Https" ]
        return scheme + "://" + String.Join(".", labels) + port
    }

let private tokenGen: Gen<InviteToken> =
    gen {
        let! origin =
            originGen |> Gen.filter (fun o -> ServerOrigin.canonicalize o |> Result.isOk)

        let! ns = binOf<NamespaceIdKind>
        let! invite = binOf<InviteIdKind>
        let! expiry = Gen.choose64 (1L, Int64.MaxValue)
        let! secret = binOf<InviteSecretKind>

        return
            InviteUri.createToken 1 origin ns.Wire invite.Wire expiry secret.Wire
            |> Result.defaultWith (fun e -> failwith e.Message)
    }

let private uriCandidates =
    Gen.oneof
        [
            anyString
            tokenGen |> Gen.map InviteUri.format |> Gen.bind mutate
            tokenGen |> Gen.map InviteUri.format |> Gen.bind mutate |> Gen.bind mutate
            tokenGen |> Gen.map InviteUri.format
        ]

let private noThrow (f: unit -> bool) =
    try
        f ()
    with e ->
        failwithf "threw %O" e

let tests =
    testList
        "invites"
        [
            testPropertyWithConfig config "origin canonicalisation never throws and is idempotent"
            <| forAll (Gen.oneof [ anyString; originGen; originGen |> Gen.bind mutate ]) (fun s ->
                noThrow (fun () ->
                    match ServerOrigin.canonicalize s with
                    | Ok o ->
                        ServerOrigin.canonicalize o.Value = Ok o
                        && ServerOrigin.parseCanonical o.Value = Ok o
                    | Error _ -> ServerOrigin.parseCanonical s |> Result.isError))

            testPropertyWithConfig config "parseCanonical accepts only the canonical spelling"
            <| forAll (Gen.oneof [ originGen; originGen |> Gen.bind mutate; anyString ]) (fun s ->
                match ServerOrigin.parseCanonical s with
                | Ok o -> o.Value = s && o.Value.Length <= Limits.MaxServerOriginLength
                | Error _ -> true)

            testPropertyWithConfig config "invite URI: parse (format token) = token"
            <| forAll tokenGen (fun t -> InviteUri.parse (InviteUri.format t) = Ok t)

            testPropertyWithConfig
                config
                "invite URI: the parser never throws; what it accepts re-encodes and parses to the same token"
            <| forAll uriCandidates (fun s ->
                noThrow (fun () ->
                    match InviteUri.parse s with
                    | Ok t ->
                        let again = InviteUri.format t

                        InviteUri.parse again = Ok t
                        && InviteUri.createToken
                            t.Version
                            t.ServerOrigin.Value
                            t.NamespaceId.Wire
                            t.InviteId.Wire
                            t.ExpiresAt
                            t.InviteSecret.Wire
                            =
                            Ok t
                    | Error e -> e.Message.Length > 0))

        ]

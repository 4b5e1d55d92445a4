/// The IStore contract (docs/engine.md §9) run against every store: MemoryStore, SqliteStore in
/// memory and SqliteStore on a real file; the checklist of docs/engine.md §11.9; SQLite migrations
/// and reopening.
module BitBoxSync.Engine.Tests.StoreTests

open System
open System.IO
open System.Threading.Tasks
open Microsoft.Data.Sqlite
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite

let await (t: Task<'T>) = t.GetAwaiter().GetResult()
let awaitV (t: ValueTask<'T>) = t.AsTask().GetAwaiter().GetResult()
let awaitU (t: ValueTask) = t.AsTask().GetAwaiter().GetResult()

/// Disposes a store at the end of a `use` scope.
let disposing (s: IStore) =
    { new IDisposable with
        member _.Dispose() = s.DisposeAsync() |> awaitU
    }

let tempFile () =
    let dir =
        Path.Combine(Path.GetTempPath(), "bbs-store-tests", Guid.NewGuid().ToString("N"))

    Directory.CreateDirectory dir |> ignore
    Path.Combine(dir, "meta.sqlite")

/// The stores under test, by name.
let stores: (string * (unit -> IStore)) list =
    [
        "memory", (fun () -> new MemoryStore() :> IStore)
        "sqlite in memory", (fun () -> SqliteStore.OpenInMemoryAsync() |> await :> IStore)
        "sqlite file", (fun () -> SqliteStore.OpenAsync(tempFile ()) |> await :> IStore)
        "sqlite file with sealed secrets",
        (fun () ->
            SqliteStore.OpenAsync(tempFile (), PassphraseKeyProtector("store contract", 1, 8 * 1024)) |> await :> IStore)
    ]

let keyA = String('a', 64)
let keyB = String('b', 64)
let ns1 = String('1', 32)
let ns2 = String('2', 32)
let t0 = DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero)

/// F# mirrors of the C# records (F# cannot copy-and-update C# records).
type Id =
    {
        KeyId: string
        Kind: string
        AccessToken: string
        TokenExpiry: Nullable<DateTimeOffset>
        DefaultNamespaceId: string
        UpdatedAt: DateTimeOffset
    }

    member i.Record =
        IdentityRecord(
            KeyId = i.KeyId,
            Kind = i.Kind,
            AccessToken = i.AccessToken,
            TokenExpiry = i.TokenExpiry,
            DefaultNamespaceId = i.DefaultNamespaceId,
            UpdatedAt = i.UpdatedAt
        )

    static member Of(r: IdentityRecord) =
        if isNull r then
            None
        else
            Some
                {
                    KeyId = r.KeyId
                    Kind = r.Kind
                    AccessToken = r.AccessToken
                    TokenExpiry = r.TokenExpiry
                    DefaultNamespaceId = r.DefaultNamespaceId
                    UpdatedAt = r.UpdatedAt
                }

type Ns =
    {
        KeyId: string
        NamespaceId: string
        Kind: string
        Head: uint64
        ActiveScopeHash: string
        Dek: byte[]
        UpdatedAt: DateTimeOffset
    }

    member n.Record =
        NamespaceRecord(
            KeyId = n.KeyId,
            NamespaceId = n.NamespaceId,
            Kind = n.Kind,
            Head = n.Head,
            ActiveScopeHash = n.ActiveScopeHash,
            Dek = n.Dek,
            UpdatedAt = n.UpdatedAt
        )

type It =
    {
        KeyId: string
        NamespaceId: string
        Collection: string
        Key: string
        ItemId: string
        Version: uint64
        BaseVersion: uint64
        BaseValue: byte[]
        Dirty: bool
        Conflict: bool
        ConflictRemoteVersion: uint64
        ConflictRemoteValue: byte[]
        UpdatedAt: DateTimeOffset
        DirGeneration: uint64
        Deleted: bool
        DirSeen: uint64
        Removed: bool
    }

    member i.Record =
        ItemRecord(
            KeyId = i.KeyId,
            NamespaceId = i.NamespaceId,
            Collection = i.Collection,
            Key = i.Key,
            ItemId = i.ItemId,
            Version = i.Version,
            BaseVersion = i.BaseVersion,
            BaseValue = i.BaseValue,
            Dirty = i.Dirty,
            Conflict = i.Conflict,
            ConflictRemoteVersion = i.ConflictRemoteVersion,
            ConflictRemoteValue = i.ConflictRemoteValue,
            UpdatedAt = i.UpdatedAt,
            DirGeneration = i.DirGeneration,
            Deleted = i.Deleted,
            DirSeen = i.DirSeen,
            Removed = i.Removed
        )

    static member Of(r: ItemRecord) =
        if isNull r then
            None
        else
            Some
                {
                    KeyId = r.KeyId
                    NamespaceId = r.NamespaceId
                    Collection = r.Collection
                    Key = r.Key
                    ItemId = r.ItemId
                    Version = r.Version
                    BaseVersion = r.BaseVersion
                    BaseValue = r.BaseValue
                    Dirty = r.Dirty
                    Conflict = r.Conflict
                    ConflictRemoteVersion = r.ConflictRemoteVersion
                    ConflictRemoteValue = r.ConflictRemoteValue
                    UpdatedAt = r.UpdatedAt
                    DirGeneration = r.DirGeneration
                    Deleted = r.Deleted
                    DirSeen = r.DirSeen
                    Removed = r.Removed
                }

let identity key : Id =
    {
        KeyId = key
        Kind = "keystore"
        AccessToken = "token-" + key.Substring(0, 4)
        TokenExpiry = Nullable(t0.AddDays 30.0)
        DefaultNamespaceId = ns1
        UpdatedAt = t0
    }

let ns key id : Ns =
    {
        KeyId = key
        NamespaceId = id
        Kind = "default"
        Head = 42UL
        ActiveScopeHash = "scope"
        Dek = Array.init 32 byte
        UpdatedAt = t0
    }

let item key nsId (i: int) : It =
    {
        KeyId = key
        NamespaceId = nsId
        Collection = "labels"
        Key = $"k{i}"
        ItemId = (string i).PadLeft(64, '0')
        Version = 7UL
        BaseVersion = 7UL
        BaseValue = [| 1uy; 2uy; byte i |]
        Dirty = false
        Conflict = false
        ConflictRemoteVersion = 0UL
        ConflictRemoteValue = null
        UpdatedAt = t0.AddSeconds(float i)
        DirGeneration = 0UL
        Deleted = false
        DirSeen = 0UL
        Removed = false
    }

let save (store: IStore) (w: StoreWrite) = store.SaveAsync w |> awaitU

let write (identity: Id option) (namespaces: Ns list) (items: It list) =
    StoreWrite(
        Identity = (identity |> Option.map (fun i -> i.Record) |> Option.toObj),
        Namespaces = [| for n in namespaces -> n.Record |],
        Items = [| for i in items -> i.Record |]
    )

let loadId (s: IStore) key =
    s.LoadIdentityAsync key |> awaitV |> Id.Of

let getItem (s: IStore) key nsId itemId =
    s.GetItemByIdAsync(key, nsId, itemId) |> awaitV |> It.Of

let private contract (name: string) (make: unit -> IStore) =
    let withStore f () =
        let store = make ()

        try
            f store
        finally
            store.DisposeAsync() |> awaitU

    testList
        name
        [
            testCase "absent rows are null"
            <| withStore (fun s ->
                Expect.isNull (s.LoadIdentityAsync keyA |> awaitV) "identity"
                Expect.isNull (s.GetNamespaceAsync(keyA, ns1) |> awaitV) "namespace"
                Expect.isNull (s.GetItemByIdAsync(keyA, ns1, "x") |> awaitV) "item by id"

                Expect.isNull
                    (s.GetItemByLogicalKeyAsync(keyA, ns1, "c", "k") |> awaitV)
                    "item by key"

                Expect.isEmpty (s.ListNamespacesAsync keyA |> awaitV) "no namespaces")

            testCase "every field round-trips, nulls stay null and empty stays empty"
            <| withStore (fun s ->
                let big =
                    { item keyA ns1 1 with
                        Version = UInt64.MaxValue - 5UL
                        BaseValue = [||]
                        Conflict = true
                        Dirty = true
                        ConflictRemoteVersion = 9UL
                        ConflictRemoteValue = [| 9uy |]
                        DirGeneration = UInt64.MaxValue - 7UL
                        Deleted = true
                        DirSeen = UInt64.MaxValue - 9UL
                        Removed = true
                    }

                let bare =
                    { identity keyB with
                        AccessToken = null
                        TokenExpiry = Nullable()
                        DefaultNamespaceId = null
                    }

                save
                    s
                    (write
                        (Some(identity keyA))
                        [
                            ns keyA ns1
                            { ns keyA ns2 with
                                Kind = null
                                Dek = null
                                ActiveScopeHash = ""
                            }
                        ]
                        [ big; item keyA ns1 2 ])

                save s (write (Some bare) [] [])
                Expect.equal (loadId s keyA) (Some(identity keyA)) "identity"
                Expect.equal (loadId s keyB) (Some bare) "identity without token, expiry, default"
                let n = s.GetNamespaceAsync(keyA, ns1) |> awaitV

                Expect.equal
                    (n.Head, n.Kind, n.ActiveScopeHash, n.Dek, n.UpdatedAt)
                    (42UL, "default", "scope", Array.init 32 byte, t0)
                    "namespace"

                let n2 = s.GetNamespaceAsync(keyA, ns2) |> awaitV
                Expect.equal (n2.Kind, n2.Dek) (null, null) "no kind yet, no DEK"
                let back = s.GetItemByIdAsync(keyA, ns1, big.ItemId) |> awaitV
                Expect.equal back.Version (UInt64.MaxValue - 5UL) "u64 above 2^63"

                Expect.equal
                    (back.BaseValue, back.ConflictRemoteValue, back.Dirty, back.Conflict)
                    ([||], [| 9uy |], true, true)
                    "bytes and flags"

                let plain = s.GetItemByLogicalKeyAsync(keyA, ns1, "labels", "k2") |> awaitV
                Expect.isNull plain.ConflictRemoteValue "null conflict value"
                Expect.equal (It.Of plain) (Some(item keyA ns1 2)) "by logical key")

            testCase "a default UpdatedAt is stamped with the time of the write"
            <| withStore (fun s ->
                let before = DateTimeOffset.UtcNow.AddSeconds -1.0

                save
                    s
                    (write
                        (Some { identity keyA with UpdatedAt = DateTimeOffset() })
                        []
                        [ { item keyA ns1 1 with UpdatedAt = DateTimeOffset() } ])

                Expect.isGreaterThan
                    (s.LoadIdentityAsync keyA |> awaitV).UpdatedAt
                    before
                    "identity stamped"

                Expect.isGreaterThan
                    (s.GetItemByIdAsync(keyA, ns1, (item keyA ns1 1).ItemId) |> awaitV).UpdatedAt
                    before
                    "item stamped")

            testCase "lists: by update time then ID, dirty across namespaces, one identity only"
            <| withStore (fun s ->
                let dirty i nsId t =
                    { item keyA nsId i with
                        Dirty = true
                        UpdatedAt = t0.AddSeconds t
                    }

                save
                    s
                    (write
                        None
                        [
                            { ns keyA ns2 with UpdatedAt = t0 }
                            { ns keyA ns1 with UpdatedAt = t0 }
                            ns keyB ns1
                        ]
                        [
                            dirty 3 ns1 1.0
                            dirty 1 ns2 5.0
                            dirty 2 ns1 1.0
                            item keyA ns1 4
                            { dirty 5 ns1 0.0 with KeyId = keyB }
                        ])

                Expect.equal
                    (s.ListNamespacesAsync keyA
                     |> awaitV
                     |> Seq.map (fun n -> n.NamespaceId)
                     |> List.ofSeq)
                    [ ns1; ns2 ]
                    "same time: by ID"

                Expect.equal
                    (s.ListDirtyItemsAsync keyA |> awaitV |> Seq.map (fun i -> i.Key) |> List.ofSeq)
                    [ "k2"; "k3"; "k1" ]
                    "dirty only, both namespaces, ordered"

                Expect.equal
                    (s.ListNamespaceItemsAsync(keyA, ns1)
                     |> awaitV
                     |> Seq.map (fun i -> i.Key)
                     |> List.ofSeq)
                    [ "k2"; "k3"; "k4" ]
                    "namespace items")

            testCase "a refused write changes nothing (a logical key bound to another item ID)"
            <| withStore (fun s ->
                save s (write None [] [ item keyA ns1 1 ])
                let clash = { item keyA ns1 2 with Key = "k1" }
                let fresh = item keyA ns1 3

                Expect.throwsT<StoreException>
                    (fun () ->
                        save s (write (Some(identity keyA)) [ ns keyA ns1 ] [ fresh; clash ]))
                    "unique logical key"

                Expect.isNull
                    (s.GetItemByIdAsync(keyA, ns1, fresh.ItemId) |> awaitV)
                    "the first row of the batch was not kept"

                Expect.isNull (s.LoadIdentityAsync keyA |> awaitV) "nor the identity"
                Expect.isNull (s.GetNamespaceAsync(keyA, ns1) |> awaitV) "nor the namespace"

                Expect.throwsT<ArgumentException>
                    (fun () -> save s (write None [] [ { fresh with ItemId = "" } ]))
                    "row without its ID")

            testCase "byte arrays are private copies, in and out"
            <| withStore (fun s ->
                let n = ns keyA ns1
                let record = n.Record
                s.SaveAsync(StoreWrite(Namespaces = [| record |])) |> awaitU
                record.Dek[0] <- 99uy
                let back = s.GetNamespaceAsync(keyA, ns1) |> awaitV
                Expect.equal back.Dek[0] 0uy "input copied"
                back.Dek[1] <- 99uy
                Expect.equal (s.GetNamespaceAsync(keyA, ns1) |> awaitV).Dek[1] 1uy "output copied")

            testCase "TestForgetIdentitySecretsKeepsSyncMetadata"
            <| withStore (fun s ->
                save s (write (Some(identity keyA)) [ ns keyA ns1 ] [ item keyA ns1 1 ])
                save s (write (Some(identity keyB)) [ ns keyB ns1 ] [])
                s.ForgetIdentitySecretsAsync keyA |> awaitU
                let a = s.LoadIdentityAsync keyA |> awaitV

                Expect.equal
                    (a.AccessToken, a.TokenExpiry)
                    (null, Nullable())
                    "token and expiry cleared"

                Expect.equal a.DefaultNamespaceId ns1 "default namespace kept"
                let n = s.GetNamespaceAsync(keyA, ns1) |> awaitV

                Expect.equal
                    (n.Dek, n.Head, n.ActiveScopeHash)
                    (null, 42UL, "scope")
                    "DEK cleared, head and scope kept"

                let i = s.GetItemByIdAsync(keyA, ns1, (item keyA ns1 1).ItemId) |> awaitV
                Expect.equal (i.Version, i.BaseValue) (7UL, [| 1uy; 2uy; 1uy |]) "items kept"
                let b = s.LoadIdentityAsync keyB |> awaitV

                Expect.equal
                    (b.AccessToken, b.TokenExpiry)
                    ((identity keyB).AccessToken, (identity keyB).TokenExpiry)
                    "other identity untouched"

                Expect.isNotNull
                    (s.GetNamespaceAsync(keyB, ns1) |> awaitV).Dek
                    "other identity's DEK untouched")

            testCase "TestResetSyncStateKeepsAuthState"
            <| withStore (fun s ->
                save s (write (Some(identity keyA)) [ ns keyA ns1 ] [ item keyA ns1 1 ])
                save s (write (Some(identity keyB)) [ ns keyB ns1 ] [])
                s.ResetSyncStateAsync keyA |> awaitU
                let a = s.LoadIdentityAsync keyA |> awaitV

                Expect.equal
                    (a.AccessToken, a.TokenExpiry)
                    ((identity keyA).AccessToken, (identity keyA).TokenExpiry)
                    "token and expiry kept"

                Expect.isNull a.DefaultNamespaceId "default namespace cleared"
                Expect.isNull (s.GetNamespaceAsync(keyA, ns1) |> awaitV) "namespaces deleted"

                Expect.isNull
                    (s.GetItemByIdAsync(keyA, ns1, (item keyA ns1 1).ItemId) |> awaitV)
                    "items deleted"

                let b = s.LoadIdentityAsync keyB |> awaitV

                Expect.equal
                    (b.AccessToken, b.DefaultNamespaceId)
                    ((identity keyB).AccessToken, ns1)
                    "other identity untouched"

                Expect.isNotNull
                    (s.GetNamespaceAsync(keyB, ns1) |> awaitV).Dek
                    "other DEK untouched")

            testCase "TestResetSyncStateMissingIdentityIsNoOp"
            <| withStore (fun s ->
                s.ResetSyncStateAsync keyA |> awaitU
                s.ForgetIdentitySecretsAsync keyA |> awaitU
                Expect.isNull (s.LoadIdentityAsync keyA |> awaitV) "still nothing")

            testCase "a disposed store refuses work"
            <| fun () ->
                let s = make ()
                s.DisposeAsync() |> awaitU

                Expect.throwsT<ObjectDisposedException>
                    (fun () -> s.LoadIdentityAsync keyA |> awaitV |> ignore)
                    "disposed"
        ]

let private sqlite =
    testList
        "sqlite store"
        [
            test "TestOpenInMemoryReturnsIsolatedStores" {
                let a = SqliteStore.OpenInMemoryAsync() |> await
                use _a = disposing a
                let b = SqliteStore.OpenInMemoryAsync() |> await
                use _b = disposing b
                save a (write (Some(identity keyA)) [] [])
                Expect.isNull (b.LoadIdentityAsync keyA |> awaitV) "isolated"
                Expect.isNotNull (a.LoadIdentityAsync keyA |> awaitV) "kept"
            }

            test "reopening a file keeps every row; the schema version is recorded" {
                let path = tempFile ()

                do
                    let s = SqliteStore.OpenAsync path |> await
                    use _s = disposing s
                    save s (write (Some(identity keyA)) [ ns keyA ns1 ] [ item keyA ns1 1 ])

                let s = SqliteStore.OpenAsync path |> await
                use _s = disposing s
                Expect.equal (loadId s keyA) (Some(identity keyA)) "identity"

                Expect.equal
                    (getItem s keyA ns1 (item keyA ns1 1).ItemId)
                    (Some(item keyA ns1 1))
                    "item"

                use c = new SqliteConnection($"Data Source={path}")
                c.Open()
                use cmd = c.CreateCommand()
                cmd.CommandText <- "PRAGMA user_version"

                Expect.equal
                    (Convert.ToInt32(cmd.ExecuteScalar()))
                    SqliteStore.SchemaVersion
                    "user_version"

                cmd.CommandText <- "PRAGMA journal_mode"
                Expect.equal (string (cmd.ExecuteScalar())) "wal" "WAL"
            }

            test "a schema-2 store (before deletes) migrates: its item rows read as never deleted" {
                let path = tempFile ()

                do
                    let s = SqliteStore.OpenAsync path |> await
                    use _s = disposing s
                    save s (write (Some(identity keyA)) [ ns keyA ns1 ] [ item keyA ns1 1 ])

                do
                    // Make the file exactly what schema 2 wrote: without the two columns of migration 3.
                    use c = new SqliteConnection($"Data Source={path};Pooling=False")
                    c.Open()
                    use cmd = c.CreateCommand()
                    cmd.CommandText <- "ALTER TABLE items DROP COLUMN removed; ALTER TABLE items DROP COLUMN dir_seen; ALTER TABLE items DROP COLUMN deleted; ALTER TABLE items DROP COLUMN dir_generation; PRAGMA user_version = 2"
                    cmd.ExecuteNonQuery() |> ignore

                let s = SqliteStore.OpenAsync path |> await
                use _s = disposing s
                Expect.equal (getItem s keyA ns1 (item keyA ns1 1).ItemId) (Some(item keyA ns1 1)) "the row, not deleted"
                let deleted = { item keyA ns1 2 with DirGeneration = 3UL; Deleted = true; DirSeen = 7UL; Removed = true }
                save s (write None [] [ deleted ])
                Expect.equal (getItem s keyA ns1 deleted.ItemId) (Some deleted) "the new columns are written"
            }

            test "a store written by a newer version is refused, untouched" {
                let path = tempFile ()

                do
                    use c = new SqliteConnection($"Data Source={path};Pooling=False")
                    c.Open()
                    use cmd = c.CreateCommand()
                    cmd.CommandText <- "PRAGMA user_version = 99"
                    cmd.ExecuteNonQuery() |> ignore

                let e =
                    Expect.throwsT<StoreException>
                        (fun () -> SqliteStore.OpenAsync path |> await |> ignore)
                        "newer schema"

                ignore e
            }

            test "an empty path is refused" {
                Expect.throwsT<ArgumentException>
                    (fun () -> SqliteStore.OpenAsync "" |> await |> ignore)
                    "sqlite path is required"
            }
        ]

let tests =
    testList "stores" [ for name, make in stores -> contract name make ]
    |> fun l -> testList "storage" [ l; sqlite ]

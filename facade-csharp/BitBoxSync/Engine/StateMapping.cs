using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Storage;
using Microsoft.FSharp.Core;

namespace BitBoxSync;

/// <summary>Conversions between the store's C# records and the core's F# records.</summary>
internal static class StateMapping
{
    public static FSharpOption<T> Opt<T>(T? value) where T : class => value is null ? FSharpOption<T>.None : FSharpOption<T>.Some(value);

    public static FSharpOption<T> OptValue<T>(T? value) where T : struct =>
        value is { } v ? FSharpOption<T>.Some(v) : FSharpOption<T>.None;

    public static T? OrNull<T>(FSharpOption<T>? o) where T : class => o is null ? null : o.Value;

    private static Bin<K> Parse<K>(string value) where K : IBinaryKind
    {
        var r = Bin.parse<K>(value);
        return r.IsOk ? r.ResultValue : throw new StoreException($"corrupt store row: {r.ErrorValue.Message}");
    }

    private static Bin<K> FromBytes<K>(byte[] value) where K : IBinaryKind
    {
        var r = Bin.ofBytes<K>(value);
        return r.IsOk ? r.ResultValue : throw new StoreException($"corrupt store row: {r.ErrorValue.Message}");
    }

    private static NamespaceKind? Kind(string? kind) => kind switch
    {
        "default" => NamespaceKind.Default,
        "shared" => NamespaceKind.Shared,
        _ => null,
    };

    public static IdentityState ToCore(IdentityRecord r) => new(
        Parse<KeyIdKind>(r.KeyId),
        IdentityKind.Keystore,
        string.IsNullOrEmpty(r.AccessToken) ? FSharpOption<string>.None : FSharpOption<string>.Some(r.AccessToken),
        OptValue(r.TokenExpiry),
        r.DefaultNamespaceId is null ? FSharpOption<Bin<NamespaceIdKind>>.None : FSharpOption<Bin<NamespaceIdKind>>.Some(Parse<NamespaceIdKind>(r.DefaultNamespaceId)),
        r.UpdatedAt);

    public static IdentityRecord ToRecord(IdentityState s) => new()
    {
        KeyId = s.KeyId.Wire,
        Kind = s.Kind.Wire,
        AccessToken = OrNull(s.AccessToken),
        TokenExpiry = s.TokenExpiry is null ? null : s.TokenExpiry.Value,
        DefaultNamespaceId = s.DefaultNamespaceId is null ? null : s.DefaultNamespaceId.Value.Wire,
        UpdatedAt = s.UpdatedAt,
    };

    public static NamespaceState ToCore(NamespaceRecord r) => new(
        Parse<KeyIdKind>(r.KeyId),
        Parse<NamespaceIdKind>(r.NamespaceId),
        Kind(r.Kind) is { } k ? FSharpOption<NamespaceKind>.Some(k) : FSharpOption<NamespaceKind>.None,
        r.Head,
        r.ActiveScopeHash ?? "",
        r.Dek is { Length: > 0 } dek ? FSharpOption<Bin<DekKind>>.Some(FromBytes<DekKind>(dek)) : FSharpOption<Bin<DekKind>>.None,
        r.UpdatedAt);

    public static NamespaceRecord ToRecord(NamespaceState s) => new()
    {
        KeyId = s.KeyId.Wire,
        NamespaceId = s.NamespaceId.Wire,
        Kind = s.Kind is null ? null : s.Kind.Value.Wire,
        Head = s.Head,
        ActiveScopeHash = s.ActiveScopeHash,
        Dek = s.Dek is null ? null : Bin.toArray(s.Dek.Value),
        UpdatedAt = s.UpdatedAt,
    };

    public static ItemState ToCore(ItemRecord r) => new(
        Parse<KeyIdKind>(r.KeyId),
        Parse<NamespaceIdKind>(r.NamespaceId),
        r.Collection,
        r.Key,
        Parse<ItemIdKind>(r.ItemId),
        r.Version,
        r.BaseVersion,
        Opt(r.BaseValue),
        r.Dirty,
        r.Conflict,
        r.ConflictRemoteVersion,
        Opt(r.ConflictRemoteValue),
        r.UpdatedAt,
        r.DirGeneration,
        r.Deleted,
        r.DirSeen,
        r.Removed);

    public static ItemRecord ToRecord(ItemState s) => new()
    {
        KeyId = s.KeyId.Wire,
        NamespaceId = s.NamespaceId.Wire,
        Collection = s.Collection,
        Key = s.Key,
        ItemId = s.ItemId.Wire,
        Version = s.Version,
        BaseVersion = s.BaseVersion,
        BaseValue = OrNull(s.BaseValue),
        Dirty = s.Dirty,
        Conflict = s.Conflict,
        ConflictRemoteVersion = s.ConflictRemoteVersion,
        ConflictRemoteValue = OrNull(s.ConflictRemoteValue),
        UpdatedAt = s.UpdatedAt,
        DirGeneration = s.DirGeneration,
        Deleted = s.Deleted,
        DirSeen = s.DirSeen,
        Removed = s.Removed,
    };

    /// <summary>The exception for a core error.</summary>
    public static SyncException ToException(SyncError e) =>
        e.IsRollback || e.IsNamespaceRemoved ? new RollbackDetectedException(e.Message) : new SyncProtocolException(e.Message);
}

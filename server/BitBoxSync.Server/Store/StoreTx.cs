using System.Data.Common;
using System.Text;
using BitBoxSync.Protocol.Wire;
using static BitBoxSync.Server.Interop;

namespace BitBoxSync.Server.Store;

/// <summary>
/// One open store transaction: typed reads and writes of the server's rows. Every method runs
/// inside the transaction; nothing is visible to others until <see cref="ServerStore"/> commits.
/// </summary>
internal sealed class StoreTx(DbConnection connection, DbTransaction transaction, Dialect dialect, bool write)
{
    /// <summary>Row-lock suffix: only write transactions lock (a snapshot read never waits or fails).</summary>
    private string ForUpdate => write ? dialect.ForUpdate : "";

    private readonly HashSet<string> _changed = new(StringComparer.Ordinal);

    /// <summary>Watch keys changed by this transaction, signalled after commit.</summary>
    public IReadOnlyCollection<string> Changed => _changed;

    /// <summary>Marks a namespace's head as changed (wakes its watchers after commit).</summary>
    public void NamespaceChanged(NamespaceId ns) => _changed.Add(WatchKeys.Namespace(ns.Wire));

    /// <summary>Marks an identity's visible namespace set as changed.</summary>
    public void MembershipChanged(KeyId keyId) => _changed.Add(WatchKeys.Identity(keyId.Wire));

    /// <summary>PostgreSQL: queue NOTIFY for every changed key (delivered at commit).</summary>
    public async Task NotifyAsync(CancellationToken ct)
    {
        if (dialect.NotifySql is null) return;
        foreach (var key in _changed)
            await ExecuteAsync(dialect.NotifySql, ct, ("key", key));
    }

    // ------------------------------------------------------------------ plumbing

    private DbCommand Command(string sql, (string Name, object? Value)[] args)
    {
        var cmd = connection.CreateCommand();
        cmd.Transaction = transaction;
        cmd.CommandText = sql;
        foreach (var (name, value) in args)
        {
            var p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value ?? DBNull.Value;
            cmd.Parameters.Add(p);
        }
        return cmd;
    }

    private async Task<int> ExecuteAsync(string sql, CancellationToken ct, params (string, object?)[] args)
    {
        await using var cmd = Command(sql, args);
        return await cmd.ExecuteNonQueryAsync(ct);
    }

    private async Task<List<T>> QueryAsync<T>(string sql, Func<DbDataReader, T> read, CancellationToken ct, params (string, object?)[] args)
    {
        await using var cmd = Command(sql, args);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        var rows = new List<T>();
        while (await reader.ReadAsync(ct)) rows.Add(read(reader));
        return rows;
    }

    private async Task<T?> SingleAsync<T>(string sql, Func<DbDataReader, T> read, CancellationToken ct, params (string, object?)[] args) where T : class =>
        (await QueryAsync(sql, read, ct, args)).FirstOrDefault();

    private async Task<long> ScalarAsync(string sql, CancellationToken ct, params (string, object?)[] args)
    {
        await using var cmd = Command(sql, args);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct));
    }

    private static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();
    private static DateTimeOffset Time(DbDataReader r, int i) => DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(i));
    private static byte[] Blob(DbDataReader r, int i) => (byte[])r.GetValue(i);
    private static IdentityKind Kind(string s) => IdentityKindModule.parse(s).OrBadRequest();

    // ------------------------------------------------------------------ challenges

    public Task InsertChallengeAsync(StoredChallenge c, CancellationToken ct)
    {
        var (action, hash) = c.Purpose is ChallengePurpose.SensitiveAction s
            ? (s.Item1.Wire, s.Item2.Bytes())
            : ((string?)null, (byte[]?)null);
        return ExecuteAsync(
            "INSERT INTO challenges (challenge, purpose, action, fields_hash, kind, expires_at, used) VALUES (@c, @p, @a, @h, @k, @e, 0)",
            ct, ("c", c.Challenge.Bytes()), ("p", c.Purpose.Wire), ("a", action), ("h", hash), ("k", c.Kind.Wire), ("e", Ms(c.ExpiresAt)));
    }

    /// <summary>Drops challenges that expired more than an hour ago (bounded table).</summary>
    /// <summary>
    /// Deletes rows nothing can use again: expired or used challenges, expired or revoked tokens,
    /// pending join requests past their expiry. Returns how many rows went.
    /// </summary>
    public async Task<int> SweepAsync(DateTimeOffset now, CancellationToken ct) =>
        await ExecuteAsync("DELETE FROM challenges WHERE expires_at < @t OR used <> 0", ct, ("t", Ms(now)))
        + await ExecuteAsync("DELETE FROM tokens WHERE expires_at <= @t OR revoked <> 0", ct, ("t", Ms(now)))
        + await ExecuteAsync("DELETE FROM join_requests WHERE status = 'pending' AND expires_at <= @t", ct, ("t", now.ToUnixTimeSeconds()));

    /// <summary>Rows of a table (diagnostics and tests).</summary>
    internal Task<long> CountAsync(string table, CancellationToken ct) => ScalarAsync($"SELECT COUNT(*) FROM {table}", ct);

    public Task DeleteStaleChallengesAsync(DateTimeOffset now, CancellationToken ct) =>
        ExecuteAsync("DELETE FROM challenges WHERE expires_at < @t", ct, ("t", Ms(now.AddHours(-1))));

    public Task<StoredChallenge?> GetChallengeAsync(Challenge challenge, CancellationToken ct) =>
        SingleAsync(
            "SELECT challenge, purpose, action, fields_hash, kind, expires_at, used FROM challenges WHERE challenge = @c" + ForUpdate,
            r =>
            {
                var purpose = r.GetString(1) switch
                {
                    "login" => ChallengePurpose.Login,
                    "refresh" => ChallengePurpose.Refresh,
                    _ => ChallengePurpose.NewSensitiveAction(
                        SensitiveActionModule.parse(r.GetString(2)).OrBadRequest(),
                        Stored<ActionFieldsHashKind>(Blob(r, 3))),
                };
                return new StoredChallenge(Stored<ChallengeKind>(Blob(r, 0)), purpose, Kind(r.GetString(4)), Time(r, 5), r.GetInt64(6) != 0);
            },
            ct, ("c", challenge.Bytes()));

    public Task MarkChallengeUsedAsync(Challenge challenge, CancellationToken ct) =>
        ExecuteAsync("UPDATE challenges SET used = 1 WHERE challenge = @c", ct, ("c", challenge.Bytes()));

    // ------------------------------------------------------------------ identities and tokens

    private static RegisteredIdentity ReadIdentity(DbDataReader r) =>
        new(StoredWire<KeyIdKind>(r.GetString(0)), Kind(r.GetString(1)),
            Stored<AuthPublicKeyKind>(Blob(r, 2)), Stored<WrapPublicKeyKind>(Blob(r, 3)), Time(r, 4));

    public Task<RegisteredIdentity?> GetIdentityAsync(KeyId keyId, CancellationToken ct) =>
        SingleAsync("SELECT key_id, kind, auth_public_key, wrap_public_key, registered_at FROM identities WHERE key_id = @k",
            ReadIdentity, ct, ("k", keyId.Wire));

    /// <summary>The identity row, locked until commit (PostgreSQL): serialises per-identity limits.</summary>
    public Task<RegisteredIdentity?> LockIdentityAsync(KeyId keyId, CancellationToken ct) =>
        SingleAsync("SELECT key_id, kind, auth_public_key, wrap_public_key, registered_at FROM identities WHERE key_id = @k" + ForUpdate,
            ReadIdentity, ct, ("k", keyId.Wire));

    public Task InsertIdentityAsync(RegisteredIdentity id, CancellationToken ct) =>
        ExecuteAsync("INSERT INTO identities (key_id, kind, auth_public_key, wrap_public_key, registered_at) VALUES (@k, @kind, @a, @w, @t)",
            ct, ("k", id.KeyId.Wire), ("kind", id.Kind.Wire), ("a", id.AuthPublicKey.Bytes()), ("w", id.WrapPublicKey.Bytes()), ("t", Ms(id.RegisteredAt)));

    private static StoredToken ReadToken(DbDataReader r) =>
        new(Blob(r, 0), StoredWire<KeyIdKind>(r.GetString(1)), Time(r, 2), Time(r, 3), r.GetInt64(4) != 0);

    public Task<StoredToken?> GetTokenAsync(byte[] tokenHash, CancellationToken ct) =>
        SingleAsync("SELECT token_hash, key_id, issued_at, expires_at, revoked FROM tokens WHERE token_hash = @h",
            ReadToken, ct, ("h", tokenHash));

    /// <summary>Unrevoked, unexpired tokens of an identity.</summary>
    public Task<List<StoredToken>> ActiveTokensAsync(KeyId keyId, DateTimeOffset now, CancellationToken ct) =>
        QueryAsync("SELECT token_hash, key_id, issued_at, expires_at, revoked FROM tokens WHERE key_id = @k AND revoked = 0 AND expires_at > @t",
            ReadToken, ct, ("k", keyId.Wire), ("t", Ms(now)));

    public Task InsertTokenAsync(StoredToken t, CancellationToken ct) =>
        ExecuteAsync("INSERT INTO tokens (token_hash, key_id, issued_at, expires_at, revoked) VALUES (@h, @k, @i, @e, 0)",
            ct, ("h", t.TokenHash), ("k", t.KeyId.Wire), ("i", Ms(t.IssuedAt)), ("e", Ms(t.ExpiresAt)));

    public Task RevokeTokenAsync(byte[] tokenHash, CancellationToken ct) =>
        ExecuteAsync("UPDATE tokens SET revoked = 1 WHERE token_hash = @h", ct, ("h", tokenHash));

    public Task RevokeAllTokensAsync(KeyId keyId, CancellationToken ct) =>
        ExecuteAsync("UPDATE tokens SET revoked = 1 WHERE key_id = @k", ct, ("k", keyId.Wire));

    /// <summary>Drops an identity's tokens that expired (or were revoked) more than a day ago.</summary>
    public Task DeleteStaleTokensAsync(KeyId keyId, DateTimeOffset now, CancellationToken ct) =>
        ExecuteAsync("DELETE FROM tokens WHERE key_id = @k AND expires_at < @t", ct, ("k", keyId.Wire), ("t", Ms(now.AddDays(-1))));

    // ------------------------------------------------------------------ namespaces and members

    private const string NamespaceColumns = "n.namespace_id, n.kind, n.head, n.created_by, n.created_at";

    private static StoredNamespace ReadNamespace(DbDataReader r) =>
        new(StoredWire<NamespaceIdKind>(r.GetString(0)), NamespaceKindModule.parse("kind", r.GetString(1)).OrBadRequest(),
            (ulong)r.GetInt64(2), StoredWire<KeyIdKind>(r.GetString(3)), Time(r, 4));

    /// <summary>The namespace row, locked against concurrent writers until commit (PostgreSQL).</summary>
    public Task<StoredNamespace?> LockNamespaceAsync(NamespaceId ns, CancellationToken ct) =>
        SingleAsync($"SELECT {NamespaceColumns} FROM namespaces n WHERE n.namespace_id = @n" + ForUpdate,
            ReadNamespace, ct, ("n", ns.Wire));

    public Task<StoredNamespace?> GetNamespaceAsync(NamespaceId ns, CancellationToken ct) =>
        SingleAsync($"SELECT {NamespaceColumns} FROM namespaces n WHERE n.namespace_id = @n", ReadNamespace, ct, ("n", ns.Wire));

    public Task<NamespaceUsage?> UsageAsync(NamespaceId ns, CancellationToken ct) =>
        SingleAsync("SELECT head, item_count, stored_bytes FROM namespaces WHERE namespace_id = @n" + ForUpdate,
            r => new NamespaceUsage(ns, (ulong)r.GetInt64(0), (int)r.GetInt64(1), r.GetInt64(2)), ct, ("n", ns.Wire));

    public Task SetUsageAsync(NamespaceUsage u, CancellationToken ct)
    {
        NamespaceChanged(u.NamespaceId);
        return ExecuteAsync("UPDATE namespaces SET head = @h, item_count = @c, stored_bytes = @b WHERE namespace_id = @n",
            ct, ("h", (long)u.Head), ("c", (long)u.ItemCount), ("b", u.StoredBytes), ("n", u.NamespaceId.Wire));
    }

    public async Task InsertNamespaceAsync(NamespaceCreation c, CancellationToken ct)
    {
        var n = c.Namespace;
        await ExecuteAsync(
            "INSERT INTO namespaces (namespace_id, kind, head, created_by, created_at, item_count, stored_bytes) VALUES (@n, @k, @h, @c, @t, 0, 0)",
            ct, ("n", n.NamespaceId.Wire), ("k", n.Kind.Wire), ("h", (long)n.Head), ("c", n.CreatedBy.Wire), ("t", Ms(n.CreatedAt)));
        if (n.Kind.IsDefault)
            await ExecuteAsync("INSERT INTO default_namespaces (key_id, namespace_id) VALUES (@k, @n)",
                ct, ("k", n.CreatedBy.Wire), ("n", n.NamespaceId.Wire));
        await InsertMembershipAsync(c.Membership, ct);
    }

    public async Task<bool> NamespaceExistsAsync(NamespaceId ns, CancellationToken ct) =>
        await ScalarAsync("SELECT COUNT(*) FROM namespaces WHERE namespace_id = @n", ct, ("n", ns.Wire)) > 0;

    /// <summary>Every namespace the identity is a member of.</summary>
    public Task<List<StoredNamespace>> NamespacesOfAsync(KeyId keyId, CancellationToken ct) =>
        QueryAsync($"SELECT {NamespaceColumns} FROM namespaces n JOIN members m ON m.namespace_id = n.namespace_id WHERE m.key_id = @k ORDER BY n.namespace_id",
            ReadNamespace, ct, ("k", keyId.Wire));

    public async Task<int> CountNamespacesOfAsync(KeyId keyId, CancellationToken ct) =>
        (int)await ScalarAsync("SELECT COUNT(*) FROM members WHERE key_id = @k", ct, ("k", keyId.Wire));

    public async Task<(StoredNamespace, Membership)?> DefaultNamespaceOfAsync(KeyId keyId, CancellationToken ct)
    {
        var ns = await SingleAsync(
            $"SELECT {NamespaceColumns} FROM namespaces n JOIN default_namespaces d ON d.namespace_id = n.namespace_id WHERE d.key_id = @k",
            ReadNamespace, ct, ("k", keyId.Wire));
        if (ns is null) return null;
        var m = await GetMembershipAsync(ns.NamespaceId, keyId, ct)
            ?? throw new InvalidOperationException("default namespace without its owner's membership");
        return (ns, m);
    }

    private static Membership ReadMembership(DbDataReader r) =>
        new(StoredWire<NamespaceIdKind>(r.GetString(0)), StoredWire<KeyIdKind>(r.GetString(1)), Kind(r.GetString(2)),
            Stored<WrappedDekKind>(Blob(r, 3)), Time(r, 4));

    public Task<Membership?> GetMembershipAsync(NamespaceId ns, KeyId keyId, CancellationToken ct) =>
        SingleAsync("SELECT namespace_id, key_id, kind, wrapped_dek, joined_at FROM members WHERE namespace_id = @n AND key_id = @k",
            ReadMembership, ct, ("n", ns.Wire), ("k", keyId.Wire));

    public Task<List<Membership>> MembersAsync(NamespaceId ns, CancellationToken ct) =>
        QueryAsync("SELECT namespace_id, key_id, kind, wrapped_dek, joined_at FROM members WHERE namespace_id = @n",
            ReadMembership, ct, ("n", ns.Wire));

    public Task InsertMembershipAsync(Membership m, CancellationToken ct)
    {
        MembershipChanged(m.KeyId);
        return ExecuteAsync("INSERT INTO members (namespace_id, key_id, kind, wrapped_dek, joined_at) VALUES (@n, @k, @kind, @w, @t)",
            ct, ("n", m.NamespaceId.Wire), ("k", m.KeyId.Wire), ("kind", m.Kind.Wire), ("w", m.WrappedDek.Bytes()), ("t", Ms(m.JoinedAt)));
    }

    // ------------------------------------------------------------------ invites

    private const string InviteColumns =
        "invite_id, namespace_id, created_by, created_at, expires_at, max_accepted, max_pending, server_secret_hash, accepted_count, revoked_at";

    private static StoredInvite ReadInvite(DbDataReader r) =>
        new(StoredWire<InviteIdKind>(r.GetString(0)), StoredWire<NamespaceIdKind>(r.GetString(1)), StoredWire<KeyIdKind>(r.GetString(2)),
            Time(r, 3), r.GetInt64(4), (int)r.GetInt64(5), r.IsDBNull(6) ? null : Some((int)r.GetInt64(6)),
            Stored<InviteServerSecretHashKind>(Blob(r, 7)), (int)r.GetInt64(8), r.IsDBNull(9) ? null : Some(Time(r, 9)));

    public Task<StoredInvite?> GetInviteAsync(InviteId invite, CancellationToken ct) =>
        SingleAsync($"SELECT {InviteColumns} FROM invites WHERE invite_id = @i", ReadInvite, ct, ("i", invite.Wire));

    public Task<List<StoredInvite>> InvitesOfAsync(NamespaceId ns, CancellationToken ct) =>
        QueryAsync($"SELECT {InviteColumns} FROM invites WHERE namespace_id = @n", ReadInvite, ct, ("n", ns.Wire));

    public Task InsertInviteAsync(StoredInvite i, CancellationToken ct) =>
        ExecuteAsync($"INSERT INTO invites ({InviteColumns}) VALUES (@i, @n, @c, @t, @e, @m, @p, @h, @a, @r)",
            ct, ("i", i.InviteId.Wire), ("n", i.NamespaceId.Wire), ("c", i.CreatedBy.Wire), ("t", Ms(i.CreatedAt)), ("e", i.ExpiresAt),
            ("m", (long)i.MaxAccepted), ("p", i.MaxPending is null ? null : (object)(long)i.MaxPending.Value), ("h", i.ServerSecretHash.Bytes()), ("a", (long)i.AcceptedCount), ("r", RevokedAt(i)));

    public Task UpdateInviteAsync(StoredInvite i, CancellationToken ct) =>
        ExecuteAsync("UPDATE invites SET accepted_count = @a, revoked_at = @r WHERE invite_id = @i",
            ct, ("a", (long)i.AcceptedCount), ("r", RevokedAt(i)), ("i", i.InviteId.Wire));

    private static object? RevokedAt(StoredInvite i) => i.RevokedAt is null ? null : Ms(i.RevokedAt.Value);

    // ------------------------------------------------------------------ join requests

    private const string JoinRequestColumns =
        "namespace_id, requester_key_id, request_hash, invite_id, request_json, expires_at, created_at, status";

    private static StoredJoinRequest ReadJoinRequest(DbDataReader r)
    {
        var json = Json.decodeRequestString<NamespaceJoinRequest>(r.GetString(4));
        if (!json.IsOk) throw new InvalidOperationException("corrupt stored join request: " + json.ErrorValue);
        var status = r.GetString(7) switch
        {
            "pending" => JoinRequestStatus.Pending,
            "accepted" => JoinRequestStatus.Accepted,
            _ => JoinRequestStatus.Rejected,
        };
        return new StoredJoinRequest(StoredWire<NamespaceIdKind>(r.GetString(0)), StoredWire<InviteIdKind>(r.GetString(3)),
            StoredWire<KeyIdKind>(r.GetString(1)), StoredWire<JoinRequestHashKind>(r.GetString(2)), json.ResultValue,
            r.GetInt64(5), Time(r, 6), status);
    }

    private static string StatusWire(JoinRequestStatus s) =>
        s.IsPending ? "pending" : s.IsAccepted ? "accepted" : "rejected";

    public Task<StoredJoinRequest?> GetJoinRequestAsync(NamespaceId ns, KeyId requester, JoinRequestHash hash, CancellationToken ct) =>
        SingleAsync($"SELECT {JoinRequestColumns} FROM join_requests WHERE namespace_id = @n AND requester_key_id = @k AND request_hash = @h",
            ReadJoinRequest, ct, ("n", ns.Wire), ("k", requester.Wire), ("h", hash.Wire));

    public Task<List<StoredJoinRequest>> PendingJoinRequestsOfAsync(NamespaceId ns, CancellationToken ct) =>
        QueryAsync($"SELECT {JoinRequestColumns} FROM join_requests WHERE namespace_id = @n AND status = 'pending'",
            ReadJoinRequest, ct, ("n", ns.Wire));

    public Task<List<StoredJoinRequest>> PendingJoinRequestsOfRequesterAsync(KeyId requester, CancellationToken ct) =>
        QueryAsync($"SELECT {JoinRequestColumns} FROM join_requests WHERE requester_key_id = @k AND status = 'pending'",
            ReadJoinRequest, ct, ("k", requester.Wire));

    public async Task<int> CountPendingForInviteAsync(InviteId invite, long nowUnix, CancellationToken ct) =>
        (int)await ScalarAsync("SELECT COUNT(*) FROM join_requests WHERE invite_id = @i AND status = 'pending' AND expires_at > @t",
            ct, ("i", invite.Wire), ("t", nowUnix));

    public Task InsertJoinRequestAsync(StoredJoinRequest j, CancellationToken ct) =>
        ExecuteAsync($"INSERT INTO join_requests ({JoinRequestColumns}) VALUES (@n, @k, @h, @i, @j, @e, @t, @s)",
            ct, ("n", j.NamespaceId.Wire), ("k", j.RequesterKeyId.Wire), ("h", j.Hash.Wire), ("i", j.InviteId.Wire),
            ("j", Json.serialize(j.Request)), ("e", j.ExpiresAt), ("t", Ms(j.CreatedAt)), ("s", StatusWire(j.Status)));

    public Task SetJoinRequestStatusAsync(StoredJoinRequest j, CancellationToken ct) =>
        ExecuteAsync("UPDATE join_requests SET status = @s WHERE namespace_id = @n AND requester_key_id = @k AND request_hash = @h",
            ct, ("s", StatusWire(j.Status)), ("n", j.NamespaceId.Wire), ("k", j.RequesterKeyId.Wire), ("h", j.Hash.Wire));

    public Task DeleteJoinRequestAsync(NamespaceId ns, KeyId requester, JoinRequestHash hash, CancellationToken ct) =>
        ExecuteAsync("DELETE FROM join_requests WHERE namespace_id = @n AND requester_key_id = @k AND request_hash = @h",
            ct, ("n", ns.Wire), ("k", requester.Wire), ("h", hash.Wire));

    // ------------------------------------------------------------------ items

    public Task<StoredItem?> GetItemAsync(NamespaceId ns, ItemId item, CancellationToken ct) =>
        SingleAsync("SELECT version, nonce, aad, ciphertext, updated_at FROM items WHERE namespace_id = @n AND item_id = @i",
            r => new StoredItem(ns, item, (ulong)r.GetInt64(0),
                new SealedItem(Stored<ItemNonceKind>(Blob(r, 1)), Stored<ItemAadKind>(Blob(r, 2)), Stored<CiphertextKind>(Blob(r, 3))),
                Time(r, 4)),
            ct, ("n", ns.Wire), ("i", item.Wire));

    /// <summary>The stored rows of several items of one namespace (absent ones are not in the map), one query.</summary>
    public async Task<Dictionary<string, StoredItem>> GetItemsAsync(NamespaceId ns, IReadOnlyList<ItemId> items, CancellationToken ct)
    {
        var found = new Dictionary<string, StoredItem>(items.Count, StringComparer.Ordinal);
        if (items.Count == 0) return found;
        var (condition, list) = dialect.OneOf("item_id", items.Select(i => i.Wire).ToList());
        var rows = await QueryAsync(
            $"SELECT item_id, version, nonce, aad, ciphertext, updated_at FROM items WHERE namespace_id = @n AND {condition}",
            r => new StoredItem(ns, StoredWire<ItemIdKind>(r.GetString(0)), (ulong)r.GetInt64(1),
                new SealedItem(Stored<ItemNonceKind>(Blob(r, 2)), Stored<ItemAadKind>(Blob(r, 3)), Stored<CiphertextKind>(Blob(r, 4))),
                Time(r, 5)),
            ct, ("n", ns.Wire), ("list", list));
        foreach (var row in rows) found[row.ItemId.Wire] = row;
        return found;
    }

    private const string UpsertItemSql =
        """
        INSERT INTO items (namespace_id, item_id, version, nonce, aad, ciphertext, updated_at) VALUES (@n, @i, @v, @no, @a, @c, @t)
        ON CONFLICT (namespace_id, item_id) DO UPDATE SET version = excluded.version, nonce = excluded.nonce,
            aad = excluded.aad, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at
        """;

    public Task UpsertItemAsync(StoredItem item, CancellationToken ct) =>
        ExecuteAsync(UpsertItemSql, ct, ("n", item.NamespaceId.Wire), ("i", item.ItemId.Wire), ("v", (long)item.Version), ("no", item.Sealed.Nonce.Bytes()),
            ("a", item.Sealed.Aad.Bytes()), ("c", item.Sealed.Ciphertext.Bytes()), ("t", Ms(item.UpdatedAt)));

    /// <summary>Writes several item rows (a batch's accepted items) with one prepared statement.</summary>
    public async Task UpsertItemsAsync(IReadOnlyList<StoredItem> items, CancellationToken ct)
    {
        if (items.Count == 0) return;
        await using var cmd = Command(UpsertItemSql, [("n", null), ("i", null), ("v", null), ("no", null), ("a", null), ("c", null), ("t", null)]);
        foreach (var item in items)
        {
            cmd.Parameters[0].Value = item.NamespaceId.Wire;
            cmd.Parameters[1].Value = item.ItemId.Wire;
            cmd.Parameters[2].Value = (long)item.Version;
            cmd.Parameters[3].Value = item.Sealed.Nonce.Bytes();
            cmd.Parameters[4].Value = item.Sealed.Aad.Bytes();
            cmd.Parameters[5].Value = item.Sealed.Ciphertext.Bytes();
            cmd.Parameters[6].Value = Ms(item.UpdatedAt);
            await cmd.ExecuteNonQueryAsync(ct);
        }
    }

    public Task<List<(ItemId, ulong)>> ItemVersionsAsync(NamespaceId ns, CancellationToken ct) =>
        QueryAsync("SELECT item_id, version FROM items WHERE namespace_id = @n",
            r => (StoredWire<ItemIdKind>(r.GetString(0)), (ulong)r.GetInt64(1)), ct, ("n", ns.Wire));

    // ------------------------------------------------------------------ diagnostics

    /// <summary>
    /// Every durable row in a canonical text form (challenges excluded: they are consumed by any
    /// attempt, by design). Tests compare dumps before and after a refused request.
    /// </summary>
    public async Task<string> DumpAsync(CancellationToken ct)
    {
        var tables = new (string Table, string Order)[]
        {
            ("identities", "key_id"), ("tokens", "token_hash"), ("namespaces", "namespace_id"),
            ("default_namespaces", "key_id"), ("members", "namespace_id, key_id"), ("invites", "invite_id"),
            ("join_requests", "namespace_id, requester_key_id, request_hash"), ("items", "namespace_id, item_id"),
        };
        var sb = new StringBuilder();
        foreach (var (table, order) in tables)
        {
            sb.Append("# ").AppendLine(table);
            await using var cmd = Command($"SELECT * FROM {table} ORDER BY {order}", []);
            await using var r = await cmd.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
            {
                for (var i = 0; i < r.FieldCount; i++)
                {
                    var v = r.GetValue(i);
                    sb.Append(r.GetName(i)).Append('=').Append(v switch
                    {
                        byte[] b => Convert.ToHexStringLower(b),
                        DBNull => "null",
                        _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture),
                    }).Append(' ');
                }
                sb.AppendLine();
            }
        }
        return sb.ToString();
    }
}

/// <summary>Keys of the watch hub: one per namespace head, one per identity's namespace set.</summary>
internal static class WatchKeys
{
    public static string Namespace(string ns) => "n:" + ns;
    public static string Identity(string keyId) => "k:" + keyId;
}

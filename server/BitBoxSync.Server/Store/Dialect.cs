namespace BitBoxSync.Server.Store;

/// <summary>What differs between the SQL of the two stores.</summary>
internal sealed record Dialect(string Name, string BlobType, string IntType, string ForUpdate, string? NotifySql)
{
    /// <summary>SQLite: writers are serialised by <c>BEGIN IMMEDIATE</c>, so no row locks.</summary>
    public static readonly Dialect Sqlite = new("sqlite", "BLOB", "INTEGER", "", null);

    /// <summary>PostgreSQL: rows a decision depends on are locked; commits notify other processes.</summary>
    public static readonly Dialect Postgres =
        new("postgresql", "BYTEA", "BIGINT", " FOR UPDATE", "SELECT pg_notify('" + ChangeChannel + "', @key)");

    /// <summary>The LISTEN/NOTIFY channel that carries watch keys between server processes.</summary>
    public const string ChangeChannel = "bitboxsync_changes";

    public string Ddl(string statement) =>
        statement.Replace("{BLOB}", BlobType).Replace("{INT}", IntType);
}

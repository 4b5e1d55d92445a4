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

    /// <summary>
    /// A condition "<paramref name="column"/> is one of <paramref name="values"/>" with a single
    /// parameter <c>@list</c> and its value (binding hundreds of named parameters costs more than the
    /// query on SQLite): a JSON array read by <c>json_each</c>, or a PostgreSQL text array.
    /// </summary>
    public (string Condition, object Value) OneOf(string column, IReadOnlyList<string> values) =>
        BlobType == "BYTEA"
            ? ($"{column} = ANY(@list)", values.ToArray())
            : ($"{column} IN (SELECT value FROM json_each(@list))", System.Text.Json.JsonSerializer.Serialize(values));

    public string Ddl(string statement) =>
        statement.Replace("{BLOB}", BlobType).Replace("{INT}", IntType);
}

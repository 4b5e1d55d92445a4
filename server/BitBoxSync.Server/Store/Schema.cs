namespace BitBoxSync.Server.Store;

/// <summary>
/// The server schema as ordered migrations. Both stores run the same statements; the dialect
/// supplies the integer and byte column types. A migration is applied in one transaction together
/// with the new version number, so a crash never leaves a half-migrated database.
/// </summary>
internal static class Schema
{
    /// <summary>Migration N (1-based) brings the schema from version N-1 to N.</summary>
    public static readonly string[][] Migrations =
    [
        [
            """
            CREATE TABLE identities (
                key_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                auth_public_key {BLOB} NOT NULL,
                wrap_public_key {BLOB} NOT NULL,
                registered_at {INT} NOT NULL)
            """,
            """
            CREATE TABLE challenges (
                challenge {BLOB} PRIMARY KEY,
                purpose TEXT NOT NULL,
                action TEXT NULL,
                fields_hash {BLOB} NULL,
                kind TEXT NOT NULL,
                expires_at {INT} NOT NULL,
                used {INT} NOT NULL)
            """,
            "CREATE INDEX challenges_expiry ON challenges (expires_at)",
            """
            CREATE TABLE tokens (
                token_hash {BLOB} PRIMARY KEY,
                key_id TEXT NOT NULL,
                issued_at {INT} NOT NULL,
                expires_at {INT} NOT NULL,
                revoked {INT} NOT NULL)
            """,
            "CREATE INDEX tokens_key ON tokens (key_id)",
            """
            CREATE TABLE namespaces (
                namespace_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                head {INT} NOT NULL,
                created_by TEXT NOT NULL,
                created_at {INT} NOT NULL,
                item_count {INT} NOT NULL,
                stored_bytes {INT} NOT NULL)
            """,
            """
            CREATE TABLE default_namespaces (
                key_id TEXT PRIMARY KEY,
                namespace_id TEXT NOT NULL UNIQUE)
            """,
            """
            CREATE TABLE members (
                namespace_id TEXT NOT NULL,
                key_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                wrapped_dek {BLOB} NOT NULL,
                joined_at {INT} NOT NULL,
                PRIMARY KEY (namespace_id, key_id))
            """,
            "CREATE INDEX members_key ON members (key_id)",
            """
            CREATE TABLE invites (
                invite_id TEXT PRIMARY KEY,
                namespace_id TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at {INT} NOT NULL,
                expires_at {INT} NOT NULL,
                max_accepted {INT} NOT NULL,
                server_secret_hash {BLOB} NOT NULL,
                accepted_count {INT} NOT NULL,
                revoked_at {INT} NULL)
            """,
            "CREATE INDEX invites_namespace ON invites (namespace_id)",
            """
            CREATE TABLE join_requests (
                namespace_id TEXT NOT NULL,
                requester_key_id TEXT NOT NULL,
                request_hash TEXT NOT NULL,
                invite_id TEXT NOT NULL,
                request_json TEXT NOT NULL,
                expires_at {INT} NOT NULL,
                created_at {INT} NOT NULL,
                status TEXT NOT NULL,
                PRIMARY KEY (namespace_id, requester_key_id, request_hash))
            """,
            "CREATE INDEX join_requests_requester ON join_requests (requester_key_id)",
            "CREATE INDEX join_requests_invite ON join_requests (invite_id)",
            """
            CREATE TABLE items (
                namespace_id TEXT NOT NULL,
                item_id TEXT NOT NULL,
                version {INT} NOT NULL,
                nonce {BLOB} NOT NULL,
                aad {BLOB} NOT NULL,
                ciphertext {BLOB} NOT NULL,
                updated_at {INT} NOT NULL,
                PRIMARY KEY (namespace_id, item_id))
            """,
        ],
        // 2: the legacy create-invite layout's signed pending-request limit (null: current layout).
        [
            "ALTER TABLE invites ADD COLUMN max_pending {INT} NULL",
        ],
    ];

    /// <summary>The schema version this build writes.</summary>
    public static int Current => Migrations.Length;
}

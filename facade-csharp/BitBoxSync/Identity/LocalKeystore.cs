using System.Security.Cryptography;
using Keys = BitBoxSync.Protocol.DummyKeystore;

namespace BitBoxSync;

/// <summary>
/// An identity for real apps: random Ed25519 (auth) and X25519 (wrap) private keys from the OS
/// random generator, kept at rest only as a blob sealed by an <see cref="IKeyProtector"/>
/// (a passphrase with Argon2id, Windows DPAPI, ASP.NET Core Data Protection, …). It signs and
/// unwraps with the same protocol code as every identity. Move it to another device of the same
/// user with <see cref="ExportAsync"/> / <see cref="ImportAsync"/> (devices share the default
/// namespace only when they share the identity). Private keys never appear in
/// <c>ToString()</c>, logs or exceptions; they are zeroed when the keystore is disposed.
/// </summary>
public sealed class LocalKeystore : SoftwareKeystore
{
    /// <summary>What the protector binds an identity blob to (its purpose and format version).</summary>
    private static readonly byte[] Purpose = "bitboxsync-local-identity-v1"u8.ToArray();
    private const byte FormatVersion = 1;
    private readonly byte[] _secret; // version ‖ auth seed (32) ‖ wrap private key (32)

    private LocalKeystore(byte[] secret) : base(Core(secret)) => _secret = secret;

    private static KeystoreCore Core(byte[] secret) =>
        secret.Length == 65 && secret[0] == FormatVersion
            ? new KeystoreCore(Keys.FromSecrets(secret[1..33], secret[33..65]))
            : throw new KeyProtectionException("not a BitBoxSync identity (unknown format)");

    /// <summary>A new identity with fresh random keys. Save it (<see cref="SaveAsync"/>) before relying on it.</summary>
    public static LocalKeystore Create()
    {
        var secret = new byte[65];
        secret[0] = FormatVersion;
        RandomNumberGenerator.Fill(secret.AsSpan(1));
        return new LocalKeystore(secret);
    }

    /// <summary>The identity sealed by <paramref name="protector"/>: the bytes to store or to move to another device.</summary>
    public ValueTask<byte[]> ExportAsync(IKeyProtector protector, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(protector);
        return protector.ProtectAsync(_secret, Purpose, cancellationToken);
    }

    /// <summary>Opens an identity <see cref="ExportAsync"/> sealed.</summary>
    /// <exception cref="KeyProtectionException">Wrong passphrase or key, a changed blob, or not an identity.</exception>
    public static async ValueTask<LocalKeystore> ImportAsync(ReadOnlyMemory<byte> blob, IKeyProtector protector, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(protector);
        var secret = await protector.UnprotectAsync(blob, Purpose, cancellationToken);
        try
        {
            return new LocalKeystore(secret);
        }
        catch (Exception e) when (e is not KeyProtectionException)
        {
            CryptographicOperations.ZeroMemory(secret);
            throw new KeyProtectionException("not a BitBoxSync identity: " + e.GetType().Name);
        }
    }

    /// <summary>
    /// Writes the sealed identity to <paramref name="path"/> atomically (a temporary file, then a
    /// rename): a crash leaves the old file or the new one, never half of one. The file is created
    /// readable by the current user only where the OS supports it.
    /// </summary>
    public async Task SaveAsync(string path, IKeyProtector protector, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var blob = await ExportAsync(protector, cancellationToken);
        var full = Path.GetFullPath(path);
        var temp = full + ".tmp-" + Guid.NewGuid().ToString("N");
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Options = FileOptions.WriteThrough };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        try
        {
            await using (var file = new FileStream(temp, options))
                await file.WriteAsync(blob, cancellationToken);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>Loads an identity <see cref="SaveAsync"/> wrote.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="KeyProtectionException">Wrong passphrase or key, a changed file, or not an identity.</exception>
    public static async Task<LocalKeystore> LoadAsync(string path, IKeyProtector protector, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var blob = await File.ReadAllBytesAsync(path, cancellationToken);
        return await ImportAsync(blob, protector, cancellationToken);
    }

    /// <summary>Zeroes the private keys this object holds.</summary>
    public override void Dispose()
    {
        base.Dispose();
        CryptographicOperations.ZeroMemory(_secret);
    }
}

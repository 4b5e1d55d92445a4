using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using NSec.Cryptography;

namespace BitBoxSync;

/// <summary>
/// Protects secret bytes at rest (an identity's private keys) and opens them again. Implementations
/// must authenticate: a wrong secret or a changed blob fails with <see cref="KeyProtectionException"/>,
/// never with other bytes. The associated data binds a blob to its purpose.
/// </summary>
public interface IKeyProtector
{
    /// <summary>Seals <paramref name="secret"/> into a self-describing blob.</summary>
    ValueTask<byte[]> ProtectAsync(ReadOnlyMemory<byte> secret, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default);

    /// <summary>Opens a blob <see cref="ProtectAsync"/> wrote with the same associated data.</summary>
    /// <exception cref="KeyProtectionException">Wrong secret, changed or unknown blob.</exception>
    ValueTask<byte[]> UnprotectAsync(ReadOnlyMemory<byte> blob, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default);
}

/// <summary>A protected secret could not be opened: wrong passphrase, tampered or unknown blob, unusable protector.</summary>
public sealed class KeyProtectionException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public KeyProtectionException(string message) : base(message) { }
}

/// <summary>
/// Passphrase protection: a key from Argon2id (libsodium) over the passphrase and a random salt,
/// then XChaCha20-Poly1305. The blob stores its parameters (docs/security.md, "Identity files"):
/// <c>"BBSP"</c> ‖ version 1 ‖ u32be(passes) ‖ u32be(memory KiB) ‖ salt(16) ‖ nonce(24) ‖
/// ciphertext ‖ tag(16); the header is authenticated with the associated data.
/// </summary>
public sealed class PassphraseKeyProtector : IKeyProtector
{
    private static readonly byte[] Magic = "BBSP"u8.ToArray();
    private const byte Version = 1;
    private const int HeaderLength = 4 + 1 + 4 + 4 + 16 + 24;
    private readonly string _passphrase;

    /// <summary>Interactive default: 3 passes over 64 MiB (unlocking took 139 ms on the 2-core test machine; benchmarks/README.md).</summary>
    public const int DefaultPasses = 3;

    /// <summary>Interactive default memory, in KiB (64 MiB).</summary>
    public const int DefaultMemoryKiB = 64 * 1024;

    /// <summary>A protector for a passphrase, with the cost used for new blobs (reading uses the blob's own parameters).</summary>
    /// <exception cref="ArgumentException">The passphrase is empty, or the cost is out of range (1–10 passes, 8 MiB–1 GiB).</exception>
    public PassphraseKeyProtector(string passphrase, int passes = DefaultPasses, int memoryKiB = DefaultMemoryKiB)
    {
        ArgumentException.ThrowIfNullOrEmpty(passphrase);
        CheckCost(passes, memoryKiB, (m, _) => new ArgumentException(m));
        _passphrase = passphrase;
        Passes = passes;
        MemoryKiB = memoryKiB;
    }

    /// <summary>Argon2id passes for new blobs.</summary>
    public int Passes { get; }

    /// <summary>Argon2id memory for new blobs, in KiB.</summary>
    public int MemoryKiB { get; }

    private static void CheckCost(long passes, long memoryKiB, Func<string, int, Exception> error)
    {
        if (passes is < 1 or > 10) throw error($"Argon2id passes must be 1–10, not {passes}", 0);
        if (memoryKiB is < 8 * 1024 or > 1024 * 1024) throw error($"Argon2id memory must be 8 MiB–1 GiB, not {memoryKiB} KiB", 0);
    }

    private byte[] Derive(ReadOnlySpan<byte> salt, long passes, long memoryKiB)
    {
        var parameters = new Argon2Parameters { DegreeOfParallelism = 1, MemorySize = memoryKiB, NumberOfPasses = passes };
        return PasswordBasedKeyDerivationAlgorithm.Argon2id(parameters).DeriveBytes(_passphrase, salt, 32);
    }

    /// <inheritdoc />
    public ValueTask<byte[]> ProtectAsync(ReadOnlyMemory<byte> secret, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default)
    {
        var header = new byte[HeaderLength];
        Magic.CopyTo(header, 0);
        header[4] = Version;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), (uint)Passes);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(9), (uint)MemoryKiB);
        RandomNumberGenerator.Fill(header.AsSpan(13, 16));
        RandomNumberGenerator.Fill(header.AsSpan(29, 24));
        var key = Derive(header.AsSpan(13, 16), Passes, MemoryKiB);
        try
        {
            using var k = Key.Import(AeadAlgorithm.XChaCha20Poly1305, key, KeyBlobFormat.RawSymmetricKey);
            var sealedBytes = AeadAlgorithm.XChaCha20Poly1305.Encrypt(k, header.AsSpan(29, 24), Aad(header, associatedData.Span), secret.Span);
            return ValueTask.FromResult<byte[]>([.. header, .. sealedBytes]);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    /// <inheritdoc />
    public ValueTask<byte[]> UnprotectAsync(ReadOnlyMemory<byte> blob, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default)
    {
        var b = blob.Span;
        if (b.Length < HeaderLength + 16 || !b[..4].SequenceEqual(Magic))
            throw new KeyProtectionException("not a passphrase-protected blob");
        if (b[4] != Version) throw new KeyProtectionException($"unknown passphrase blob version {b[4]}");
        var passes = BinaryPrimitives.ReadUInt32BigEndian(b[5..]);
        var memory = BinaryPrimitives.ReadUInt32BigEndian(b[9..]);
        CheckCost(passes, memory, (m, _) => new KeyProtectionException("the blob's " + m));
        var header = b[..HeaderLength].ToArray();
        var key = Derive(b.Slice(13, 16), passes, memory);
        try
        {
            using var k = Key.Import(AeadAlgorithm.XChaCha20Poly1305, key, KeyBlobFormat.RawSymmetricKey);
            var plain = new byte[b.Length - HeaderLength - 16];
            if (!AeadAlgorithm.XChaCha20Poly1305.Decrypt(k, b.Slice(29, 24), Aad(header, associatedData.Span), b[HeaderLength..], plain))
                throw new KeyProtectionException("wrong passphrase, or the blob was changed");
            return ValueTask.FromResult(plain);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    private static byte[] Aad(ReadOnlySpan<byte> header, ReadOnlySpan<byte> associatedData) => [.. header, .. associatedData];

    /// <inheritdoc />
    public override string ToString() => $"PassphraseKeyProtector(Argon2id, {Passes} passes, {MemoryKiB} KiB, <passphrase redacted>)";
}

/// <summary>
/// <b>No protection — development only.</b> Stores the secret in the clear (authenticated with a
/// checksum so a damaged blob is still refused). Anyone who can read the file has the keys.
/// </summary>
public sealed class UnprotectedKeyProtectorForDevelopmentOnly : IKeyProtector
{
    private static readonly byte[] Magic = "BBSU"u8.ToArray();

    /// <inheritdoc />
    public ValueTask<byte[]> ProtectAsync(ReadOnlyMemory<byte> secret, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default)
    {
        byte[] body = [.. Magic, 1, .. secret.Span];
        return ValueTask.FromResult<byte[]>([.. body, .. Checksum(body, associatedData.Span)]);
    }

    /// <inheritdoc />
    public ValueTask<byte[]> UnprotectAsync(ReadOnlyMemory<byte> blob, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default)
    {
        var b = blob.Span;
        if (b.Length < 5 + 32 || !b[..4].SequenceEqual(Magic) || b[4] != 1) throw new KeyProtectionException("not an unprotected development blob");
        var body = b[..^32];
        if (!CryptographicOperations.FixedTimeEquals(Checksum(body, associatedData.Span), b[^32..]))
            throw new KeyProtectionException("the blob was changed");
        return ValueTask.FromResult(body[5..].ToArray());
    }

    private static byte[] Checksum(ReadOnlySpan<byte> body, ReadOnlySpan<byte> associatedData) => SHA256.HashData([.. body, .. associatedData]);
}

/// <summary>
/// Windows DPAPI for the current user (the OS ties the blob to the Windows account). Available only
/// on Windows: elsewhere every call fails with <see cref="PlatformNotSupportedException"/>.
/// </summary>
public sealed class WindowsDpapiKeyProtector : IKeyProtector
{
    /// <summary>Creates the protector.</summary>
    /// <exception cref="PlatformNotSupportedException">Not running on Windows.</exception>
    public WindowsDpapiKeyProtector()
    {
        if (!OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("Windows DPAPI protects keys only on Windows: use PassphraseKeyProtector elsewhere");
    }

    /// <inheritdoc />
    public ValueTask<byte[]> ProtectAsync(ReadOnlyMemory<byte> secret, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Dpapi.Protect(secret.Span, associatedData.Span));

    /// <inheritdoc />
    public ValueTask<byte[]> UnprotectAsync(ReadOnlyMemory<byte> blob, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Dpapi.Unprotect(blob.Span, associatedData.Span));

    /// <summary>CryptProtectData / CryptUnprotectData with the associated data as the optional entropy.</summary>
    private static class Dpapi
    {
        [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
        private struct Blob
        {
            public int Size;
            public IntPtr Data;
        }

        [System.Runtime.InteropServices.DllImport("crypt32.dll", SetLastError = true, CharSet = System.Runtime.InteropServices.CharSet.Unicode)]
        private static extern bool CryptProtectData(ref Blob input, string? description, ref Blob entropy, IntPtr reserved, IntPtr prompt, int flags, out Blob output);

        [System.Runtime.InteropServices.DllImport("crypt32.dll", SetLastError = true, CharSet = System.Runtime.InteropServices.CharSet.Unicode)]
        private static extern bool CryptUnprotectData(ref Blob input, IntPtr description, ref Blob entropy, IntPtr reserved, IntPtr prompt, int flags, out Blob output);

        [System.Runtime.InteropServices.DllImport("kernel32.dll")]
        private static extern IntPtr LocalFree(IntPtr mem);

        public static byte[] Protect(ReadOnlySpan<byte> data, ReadOnlySpan<byte> entropy) => Call(data, entropy, protect: true);

        public static byte[] Unprotect(ReadOnlySpan<byte> data, ReadOnlySpan<byte> entropy) => Call(data, entropy, protect: false);

        private static byte[] Call(ReadOnlySpan<byte> data, ReadOnlySpan<byte> entropy, bool protect)
        {
            var d = System.Runtime.InteropServices.Marshal.AllocHGlobal(Math.Max(1, data.Length));
            var e = System.Runtime.InteropServices.Marshal.AllocHGlobal(Math.Max(1, entropy.Length));
            try
            {
                System.Runtime.InteropServices.Marshal.Copy(data.ToArray(), 0, d, data.Length);
                System.Runtime.InteropServices.Marshal.Copy(entropy.ToArray(), 0, e, entropy.Length);
                var input = new Blob { Size = data.Length, Data = d };
                var extra = new Blob { Size = entropy.Length, Data = e };
                const int uiForbidden = 0x1;
                var ok = protect
                    ? CryptProtectData(ref input, "BitBoxSync identity", ref extra, IntPtr.Zero, IntPtr.Zero, uiForbidden, out var output)
                    : CryptUnprotectData(ref input, IntPtr.Zero, ref extra, IntPtr.Zero, IntPtr.Zero, uiForbidden, out output);
                if (!ok) throw new KeyProtectionException(protect ? "DPAPI could not protect the key" : "DPAPI could not open the blob (another user or machine, or changed)");
                try
                {
                    var result = new byte[output.Size];
                    System.Runtime.InteropServices.Marshal.Copy(output.Data, result, 0, output.Size);
                    return result;
                }
                finally
                {
                    LocalFree(output.Data);
                }
            }
            finally
            {
                System.Runtime.InteropServices.Marshal.FreeHGlobal(d);
                System.Runtime.InteropServices.Marshal.FreeHGlobal(e);
            }
        }
    }
}

using System.Security.Cryptography;
using Microsoft.AspNetCore.DataProtection;

namespace BitBoxSync.Extensions.DataProtection;

/// <summary>
/// Seals BitBoxSync secrets (a <see cref="LocalKeystore"/>, a store's key) with ASP.NET Core Data
/// Protection: the keys live wherever the app's Data Protection key ring lives (a directory
/// protected by DPAPI or a certificate, Azure Key Vault, Redis …). The associated data selects a
/// purpose of its own, so a blob sealed for one use does not open for another; a changed blob or
/// another key ring fails with <see cref="KeyProtectionException"/>.
/// </summary>
public sealed class DataProtectionKeyProtector : IKeyProtector
{
    private const string Purpose = "BitBoxSync.KeyProtection.v1";
    private readonly IDataProtectionProvider _provider;

    /// <summary>A protector over the app's Data Protection provider (from DI: <c>IDataProtectionProvider</c>).</summary>
    public DataProtectionKeyProtector(IDataProtectionProvider provider)
    {
        ArgumentNullException.ThrowIfNull(provider);
        _provider = provider;
    }

    private IDataProtector For(ReadOnlySpan<byte> associatedData) =>
        _provider.CreateProtector(Purpose, Convert.ToHexStringLower(SHA256.HashData(associatedData)));

    /// <inheritdoc />
    public ValueTask<byte[]> ProtectAsync(ReadOnlyMemory<byte> secret, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(For(associatedData.Span).Protect(secret.ToArray()));

    /// <inheritdoc />
    public ValueTask<byte[]> UnprotectAsync(ReadOnlyMemory<byte> blob, ReadOnlyMemory<byte> associatedData, CancellationToken cancellationToken = default)
    {
        try
        {
            return ValueTask.FromResult(For(associatedData.Span).Unprotect(blob.ToArray()));
        }
        catch (CryptographicException e)
        {
            throw new KeyProtectionException("Data Protection could not open the blob (another key ring, a revoked key, or a changed blob): " + e.GetType().Name);
        }
    }
}

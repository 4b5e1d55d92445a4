using Microsoft.Extensions.Options;

namespace BitBoxSync.Extensions.Hosting;

/// <summary>
/// The settings of <see cref="BitBoxSyncServiceCollectionExtensions.AddBitBoxSync"/>, bound from
/// configuration (the <c>BitBoxSync</c> section by convention) and validated when the host starts.
/// </summary>
public sealed class BitBoxSyncOptions
{
    /// <summary>The sync server's base URL, e.g. <c>https://sync.example</c> (required).</summary>
    public Uri? ServerUrl { get; set; }

    /// <summary>The SQLite file for sync metadata (relative paths are relative to the working directory).</summary>
    public string StorePath { get; set; } = "bitboxsync.sqlite";

    /// <summary>Base period of background polling (default 5 minutes).</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Cap of the long failure and idle backoff (default: the larger of 60 minutes and <see cref="PollInterval"/>).</summary>
    public TimeSpan? MaxPollInterval { get; set; }

    /// <summary>Start in idle mode (polls slow down while nothing changes).</summary>
    public bool IdlePolling { get; set; }

    /// <summary>Polling only: no long-poll namespace watch.</summary>
    public bool DisableNamespaceWatch { get; set; }

    /// <summary>Refresh the token this long before it expires (default 24 hours).</summary>
    public TimeSpan RefreshSkew { get; set; } = TimeSpan.FromHours(24);

    /// <summary>The HTTP timeout per request; must exceed the server's long-poll wait (default 100 s).</summary>
    public TimeSpan HttpTimeout { get; set; } = TimeSpan.FromSeconds(100);
}

/// <summary>Checks <see cref="BitBoxSyncOptions"/> when the host starts (ValidateOnStart).</summary>
internal sealed class BitBoxSyncOptionsValidator : IValidateOptions<BitBoxSyncOptions>
{
    public ValidateOptionsResult Validate(string? name, BitBoxSyncOptions o)
    {
        var failures = new List<string>();
        if (o.ServerUrl is null)
            failures.Add("BitBoxSync:ServerUrl is required (the sync server's base URL)");
        else if (!o.ServerUrl.IsAbsoluteUri || (o.ServerUrl.Scheme != Uri.UriSchemeHttp && o.ServerUrl.Scheme != Uri.UriSchemeHttps))
            failures.Add($"BitBoxSync:ServerUrl must be an absolute http or https URL, not \"{o.ServerUrl}\"");
        if (string.IsNullOrWhiteSpace(o.StorePath)) failures.Add("BitBoxSync:StorePath must name a file");
        if (o.PollInterval <= TimeSpan.Zero) failures.Add("BitBoxSync:PollInterval must be positive");
        if (o.MaxPollInterval is { } max && max < o.PollInterval) failures.Add("BitBoxSync:MaxPollInterval must not be below PollInterval");
        if (o.HttpTimeout <= TimeSpan.FromSeconds(75))
            failures.Add("BitBoxSync:HttpTimeout must exceed 75 s, the longest a server holds a long poll");
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

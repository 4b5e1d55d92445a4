namespace BitBoxSync;

/// <summary>Base class of every error BitBoxSync reports.</summary>
public class SyncException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SyncException(string message) : base(message) { }

    /// <summary>Creates the exception with its cause.</summary>
    public SyncException(string message, Exception? innerException) : base(message, innerException) { }
}

/// <summary>
/// The server refused a request (HTTP status 400 or above). <see cref="StatusCode"/> is the status;
/// <see cref="ServerMessage"/> is the <c>error</c> field of the JSON body, or the trimmed body.
/// </summary>
public sealed class SyncApiException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public SyncApiException(int statusCode, string? serverMessage)
        : base(string.IsNullOrEmpty(serverMessage)
            ? $"bitboxsync api error: status={statusCode}"
            : $"bitboxsync api error: status={statusCode} message={serverMessage}")
    {
        StatusCode = statusCode;
        ServerMessage = string.IsNullOrEmpty(serverMessage) ? null : serverMessage;
    }

    /// <summary>The HTTP status code.</summary>
    public int StatusCode { get; }

    /// <summary>The server's message, when it sent one.</summary>
    public string? ServerMessage { get; }

    /// <summary>How long the server asked the client to wait (its <c>Retry-After</c> header, with 429 or 503), if it did.</summary>
    public TimeSpan? RetryAfter { get; init; }
}

/// <summary>
/// A server answer broke the protocol: undecodable JSON, or a value the client must refuse
/// (an echo that does not match the request, a version other than the expected one, …).
/// </summary>
public sealed class SyncProtocolException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public SyncProtocolException(string message) : base(message) { }

    /// <summary>Creates the exception with its cause.</summary>
    public SyncProtocolException(string message, Exception? innerException) : base(message, innerException) { }
}

/// <summary>The request could not be sent or its answer not received (connection, timeout).</summary>
public sealed class SyncTransportException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public SyncTransportException(string message, Exception? innerException) : base(message, innerException) { }
}

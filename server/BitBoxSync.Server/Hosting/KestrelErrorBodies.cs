using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace BitBoxSync.Server.Hosting;

/// <summary>
/// Gives Kestrel's own error answers a JSON body. Kestrel refuses a malformed request (a NUL byte in
/// a header, a <c>%00</c> in the path, oversized headers, a stalled body) before any middleware runs,
/// with an empty body and <c>Connection: close</c>; no ASP.NET Core hook can change that answer. This
/// connection middleware watches the response bytes: a header block that starts with
/// <c>HTTP/1.1 4xx</c> or <c>5xx</c>, carries <c>Content-Length: 0</c> and <c>Connection: close</c> and
/// ends in the same write gets <c>{"error": …}</c> and its length. Anything else passes untouched
/// (the check reads a few bytes of each write). The standalone server only: a host app owns its
/// Kestrel.
/// </summary>
internal static class KestrelErrorBodies
{
    public static void Use(ListenOptions listen) =>
        listen.Use(next => async connection =>
        {
            var transport = connection.Transport;
            connection.Transport = new DuplexPipe(transport.Input, new RewritingWriter(transport.Output));
            try
            {
                await next(connection);
            }
            finally
            {
                connection.Transport = transport;
            }
        });

    /// <summary>The JSON error for a status Kestrel answers on its own.</summary>
    internal static string MessageFor(int status) => status switch
    {
        400 => "bad request",
        404 => "not found",
        405 => "method not allowed",
        408 => "request timeout",
        411 => "length required",
        413 => "request body too large",
        414 => "request target too long",
        417 => "expectation failed",
        431 => "request header fields too large",
        500 => "internal server error",
        503 => "service unavailable",
        505 => "HTTP version not supported",
        _ => "request refused",
    };

    /// <summary>The rewritten header block and body, or null when <paramref name="head"/> is not a bodiless error answer.</summary>
    internal static byte[]? Rewrite(ReadOnlySpan<byte> head)
    {
        if (head.Length < 16 || !head.StartsWith("HTTP/1.1 "u8) || (head[9] != (byte)'4' && head[9] != (byte)'5')
            || !head.EndsWith("\r\n\r\n"u8))
            return null;
        const string zeroLength = "\r\nContent-Length: 0\r\n";
        var text = Encoding.Latin1.GetString(head);
        var at = text.IndexOf(zeroLength, StringComparison.OrdinalIgnoreCase);
        if (at < 0 || text.IndexOf("\r\nConnection: close\r\n", StringComparison.OrdinalIgnoreCase) < 0
            || text.IndexOf("\r\nContent-Type:", StringComparison.OrdinalIgnoreCase) >= 0
            || !int.TryParse(text.AsSpan(9, 3), out var status))
            return null;
        var body = "{\"error\":\"" + MessageFor(status) + "\"}";
        var rewritten = text[..at] + $"\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n"
            + text[(at + zeroLength.Length)..] + body;
        return Encoding.Latin1.GetBytes(rewritten);
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;
        public PipeWriter Output => output;
    }

    /// <summary>Forwards everything to the transport; inspects each advanced block's first bytes.</summary>
    private sealed class RewritingWriter(PipeWriter inner) : PipeWriter
    {
        private Memory<byte> _lent;

        public override Memory<byte> GetMemory(int sizeHint = 0) => _lent = inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => (_lent = inner.GetMemory(sizeHint)).Span;

        public override void Advance(int bytes)
        {
            var written = bytes <= _lent.Length ? _lent.Span[..bytes] : default;
            var replacement = written.Length >= 16 && written[0] == (byte)'H' ? Rewrite(written) : null;
            _lent = default;
            if (replacement is null)
            {
                inner.Advance(bytes);
                return;
            }
            // Nothing was advanced yet: the same buffer (or a larger one) takes the longer answer.
            replacement.CopyTo(inner.GetSpan(replacement.Length));
            inner.Advance(replacement.Length);
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);
        public override void CancelPendingFlush() => inner.CancelPendingFlush();
        public override void Complete(Exception? exception = null) => inner.Complete(exception);
        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;
        public override long UnflushedBytes => inner.UnflushedBytes;
    }
}

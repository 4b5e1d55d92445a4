using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using BitBoxSync.Protocol.Wire;

namespace BitBoxSync.Server.Endpoints;

/// <summary>
/// Runs an endpoint and writes its answer: 200 with the response DTO as compact JSON, or the
/// refusal's status with <c>{"error": …}</c>. Unexpected failures answer 500 without details
/// (logged without secrets: no headers, no bodies).
/// </summary>
internal static class Handler
{
    private static readonly byte[] EmptyObject = "{}"u8.ToArray();

    /// <summary>A handler with no response fields answers <c>{}</c>.</summary>
    public sealed class Empty
    {
        public static readonly Empty Value = new();
    }

    /// <summary>
    /// The endpoint <paramref name="name"/> (its metrics tag): takes a rate-limit permit of
    /// <paramref name="limit"/>, runs <paramref name="handler"/>, writes the answer and counts it.
    /// </summary>
    public static RequestDelegate Json(Api api, string name, Func<HttpContext, Task<object>> handler,
        RateLimits.Kind limit = RateLimits.Kind.None) => async http =>
    {
        try
        {
            if (await api.Limits.TryEnterAsync(http, limit)) await RunAsync(api, http, handler);
        }
        finally
        {
            api.Metrics.Request(name, http.Request.Method, http.Response.StatusCode);
        }
    };

    private static async Task RunAsync(Api api, HttpContext http, Func<HttpContext, Task<object>> handler)
    {
        object result;
        try
        {
            result = await handler(http);
        }
        catch (ApiFailure f)
        {
            await WriteError(http, f.Error.Status, f.Error.Message);
            return;
        }
        catch (RateLimitedException refused)
        {
            await RateLimits.RefuseAsync(http, refused);
            return;
        }
        catch (BadHttpRequestException e)
        {
            await WriteError(http, e.StatusCode, e.StatusCode == 413 ? "request body too large" : "bad request");
            return;
        }
        catch (Store.StoreBusyException e)
        {
            api.Logger.LogWarning("{Method} {Path}: {Message}", http.Request.Method, http.Request.Path.Value, e.Message);
            await WriteError(http, 503, "database busy, retry later");
            return;
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            return; // the client went away
        }
        catch (Exception e)
        {
            api.Logger.LogError(e, "{Method} {Path} failed", http.Request.Method, http.Request.Path.Value);
            await WriteError(http, 500, "internal server error");
            return;
        }

        http.Response.StatusCode = 200;
        http.Response.ContentType = "application/json";
        if (result is Empty)
        {
            http.Response.ContentLength = EmptyObject.Length;
            await http.Response.Body.WriteAsync(EmptyObject, http.RequestAborted);
            return;
        }
        // Serialized into a pooled buffer (a batch answer never lands on the large-object heap).
        using var body = BitBoxSync.Protocol.Wire.Json.serializePooled(result);
        http.Response.ContentLength = body.Length;
        await http.Response.Body.WriteAsync(body.Memory, http.RequestAborted);
    }

    public static Task WriteError(HttpContext http, int status, string message)
    {
        if (http.Response.HasStarted) return Task.CompletedTask;
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        var body = BitBoxSync.Protocol.Wire.Json.serializeToUtf8(new ErrorResponse(message));
        return http.Response.Body.WriteAsync(body, http.RequestAborted).AsTask();
    }
}

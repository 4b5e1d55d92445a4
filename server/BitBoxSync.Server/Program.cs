using System.CommandLine;
using BitBoxSync.Server;

// The server command: `--help` lists every option (ServerCommand). Ctrl+C / SIGTERM are left to the
// ASP.NET Core host, which stops gracefully: parked watchers are answered, in-flight requests finish.
var command = ServerCommand.Build(async (options, _) =>
{
    try
    {
        await using var server = await BitBoxSyncServer.StartAsync(options);
        await server.WaitForShutdownAsync();
        return 0;
    }
    catch (Exception e) when (e is not ArgumentException)
    {
        Console.Error.WriteLine($"the server could not start: {e.GetType().Name}: {e.Message}");
        return 1;
    }
});
return await command.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });

using System.CommandLine;
using BitBoxSync.Server.Hosting;
using BitBoxSync.Server.Tool;

// The server command: `--help` lists every option (ServerCommand); `check-health` probes a running
// server (the container's health check). The server itself is AddBitBoxSyncServer + MapBitBoxSync on
// a host of its own (Standalone). Ctrl+C / SIGTERM are left to the ASP.NET Core host, which stops
// gracefully: parked watchers are answered, in-flight requests finish.
var command = ServerCommand.Build(async (builder, options, _) =>
{
    try
    {
        Standalone.Configure(builder, options);
        await using var server = await Standalone.StartAsync(builder, options, CancellationToken.None);
        await server.WaitForShutdownAsync();
        return 0;
    }
    catch (Exception e) when (e is not ArgumentException)
    {
        Console.Error.WriteLine($"the server could not start: {e.GetType().Name}: {e.Message}");
        return 1;
    }
});
command.Add(HealthCommand.Build());
return await command.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });

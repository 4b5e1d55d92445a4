using BitBoxSync.Server;
using Microsoft.Extensions.Configuration;

// The server command: options come from appsettings.json (section "BitBoxSync"), environment
// variables (BITBOXSYNC_Store=Postgres, BITBOXSYNC_PostgresConnectionString=…) and the command line.
var switches = new Dictionary<string, string>
{
    ["--urls"] = "BitBoxSync:Urls:0",
    ["--public-origin"] = "BitBoxSync:PublicOrigin",
    ["--store"] = "BitBoxSync:Store",
    ["--sqlite"] = "BitBoxSync:SqlitePath",
    ["--postgres"] = "BitBoxSync:PostgresConnectionString",
    ["--watch-timeout"] = "BitBoxSync:WatchTimeout",
    ["--log-level"] = "BitBoxSync:MinimumLogLevel",
};
if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        BitBoxSync server

        Options (also BITBOXSYNC_<Name> environment variables and the "BitBoxSync" section of appsettings.json):
          --urls URL               listen address (default http://127.0.0.1:8090)
          --public-origin ORIGIN   public https origin printed in invites (default https://localhost)
          --store sqlite|postgres  database (default sqlite)
          --sqlite PATH            SQLite file (default bitboxsync-server.sqlite)
          --postgres CONNSTRING    PostgreSQL connection string (with --store postgres)
          --watch-timeout TIME     long-poll wait, e.g. 00:00:45 (default 45 s)
          --log-level LEVEL        Trace, Debug, Information, Warning, Error (default Information)
        """);
    return 0;
}

var configuration = new ConfigurationBuilder()
    .SetBasePath(AppContext.BaseDirectory)
    .AddJsonFile("appsettings.json", optional: true)
    .AddJsonFile(Path.Combine(Directory.GetCurrentDirectory(), "appsettings.json"), optional: true)
    .AddEnvironmentVariables("BITBOXSYNC_")
    .AddCommandLine(args, switches)
    .Build();

var options = new ServerOptions();
var section = configuration.GetSection("BitBoxSync");
section.Bind(options);
// Environment variables (BITBOXSYNC_Store=…) arrive without the section prefix.
configuration.Bind(options);

try
{
    await using var server = await BitBoxSyncServer.StartAsync(options);
    await server.WaitForShutdownAsync();
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine("invalid configuration: " + e.Message);
    return 2;
}

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

/// <summary>
/// The server as operators get it: the <c>bitboxsync-server</c> .NET tool installed from a package
/// feed, and the publish layout the container image uses (server/Dockerfile): /app holds the
/// published command, the working directory /data holds appsettings.json and the SQLite file, the
/// health check is <c>bitboxsync-server check-health</c>. Image registries are out of reach here,
/// so the image itself is not built; everything it runs is.
/// </summary>
internal static class DistributionTests
{
    /// <summary>Installs the tool from <paramref name="feed"/> into a tool path, starts it, probes it.</summary>
    public static async Task ToolInstallsAndServes(string work, string feed, string nugetConfig, string version)
    {
        var tools = Path.Combine(work, "tools");
        await SampleTests.RunAsync("dotnet", ["tool", "install", "BitBoxSync.Server.Tool", "--version", version, "--tool-path", tools,
            "--configfile", nugetConfig, "--add-source", feed], work, TimeSpan.FromMinutes(3));
        var command = Path.Combine(tools, OperatingSystem.IsWindows() ? "bitboxsync-server.exe" : "bitboxsync-server");
        Check(File.Exists(command), "the tool installed a bitboxsync-server command");

        var port = FreePort();
        var data = Directory.CreateDirectory(Path.Combine(work, "tool-data")).FullName;
        using var server = Start(command, ["--urls", $"http://127.0.0.1:{port}", "--public-origin", "https://sync.example"], data, []);
        try
        {
            await server.WaitReadyAsync(new Uri($"http://127.0.0.1:{port}/readyz"));
            Check(File.Exists(Path.Combine(data, "bitboxsync-server.sqlite")), "the database is created in the working directory");
            var health = await SampleTests.RunAsync(command, ["check-health", "--url", $"http://127.0.0.1:{port}/readyz"], data, TimeSpan.FromMinutes(1));
            Check(health.Contains("200", StringComparison.Ordinal), "check-health saw 200: " + health);
            var help = await SampleTests.RunAsync(command, ["--help"], data, TimeSpan.FromMinutes(1));
            Check(help.Contains("--trusted-proxy", StringComparison.Ordinal) && help.Contains("check-health", StringComparison.Ordinal), "--help lists the options and the health command");
        }
        finally
        {
            server.Stop();
        }
    }

    /// <summary>
    /// The container's layout without the container: published to an /app folder, run from a /data
    /// working directory with the image's environment, configured by appsettings.json in /data.
    /// </summary>
    public static async Task PublishedLayoutServes()
    {
        var repo = SampleTests.FindRepositoryRoot();
        var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
        var work = Directory.CreateTempSubdirectory("bbs-publish-").FullName;
        var app = Path.Combine(work, "app");
        await SampleTests.RunAsync("dotnet", ["publish", Path.Combine(repo, "server", "BitBoxSync.Server.Tool", "BitBoxSync.Server.Tool.csproj"),
            "-c", configuration, "--no-build", "-o", app, "-v", "q", "-nologo"], repo, TimeSpan.FromMinutes(4));
        var dll = Path.Combine(app, "bitboxsync-server.dll");
        Check(File.Exists(dll), "the publish output holds the command the image's ENTRYPOINT names");

        var data = Directory.CreateDirectory(Path.Combine(work, "data")).FullName;
        await File.WriteAllTextAsync(Path.Combine(data, "appsettings.json"),
            """{ "BitBoxSync": { "PublicOrigin": "https://from-appsettings.example" }, "Logging": { "Console": { "FormatterName": "json" } } }""");
        var port = FreePort();
        // The image sets ASPNETCORE_HTTP_PORTS=8080 (all interfaces); tests stay on loopback, so URLS
        // (which wins over HTTP_PORTS) names 127.0.0.1 here.
        Dictionary<string, string> environment = new()
        {
            ["ASPNETCORE_HTTP_PORTS"] = "8080",
            ["ASPNETCORE_URLS"] = $"http://127.0.0.1:{port}",
        };
        using var server = Start("dotnet", [dll], data, environment);
        try
        {
            await server.WaitReadyAsync(new Uri($"http://127.0.0.1:{port}/readyz"));
            Check(File.Exists(Path.Combine(data, "bitboxsync-server.sqlite")), "SQLite in the working directory (the /data volume)");
            await server.WaitForOutputAsync("from-appsettings.example");
            Check(server.Output.Contains("\"Origin\":\"https://from-appsettings.example\"", StringComparison.Ordinal),
                "appsettings.json in the working directory configures the server and its JSON logs:\n" + server.Output);
            var healthy = await RunWithExitCodeAsync("dotnet", [dll, "check-health"], data, environment);
            Check(healthy.Code == 0, $"the HEALTHCHECK command finds the server from the same settings: {healthy.Output}");
        }
        finally
        {
            server.Stop();
        }
        var down = await RunWithExitCodeAsync("dotnet", [dll, "check-health", "--timeout", "2"], data, environment);
        Check(down.Code == 1, $"and reports a stopped server as unhealthy: {down.Output}");
        try
        {
            Directory.Delete(work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    private static async Task<(int Code, string Output)> RunWithExitCodeAsync(string file, string[] args, string cwd, Dictionary<string, string> environment)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await output + await error);
    }

    private static RunningServer Start(string file, string[] args, string cwd, Dictionary<string, string> environment)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        return new RunningServer(Process.Start(psi)!);
    }

    private sealed class RunningServer : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _output = new();

        public RunningServer(Process process)
        {
            _process = process;
            process.OutputDataReceived += (_, e) => { lock (_output) _output.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { lock (_output) _output.AppendLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public string Output
        {
            get { lock (_output) return _output.ToString(); }
        }

        public async Task WaitReadyAsync(Uri readyz)
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(60))
            {
                if (_process.HasExited) throw new Exception($"the server exited with {_process.ExitCode}:\n{Output}");
                try
                {
                    using var answer = await http.GetAsync(readyz);
                    if (answer.StatusCode == HttpStatusCode.OK) return;
                }
                catch (HttpRequestException)
                {
                }
                catch (TaskCanceledException)
                {
                }
                await Task.Delay(100);
            }
            throw new TimeoutException($"{readyz} did not answer 200 within 60 s:\n{Output}");
        }

        public async Task WaitForOutputAsync(string text)
        {
            var sw = Stopwatch.StartNew();
            while (!Output.Contains(text, StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(50);
        }

        public void Stop()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
        }

        public void Dispose()
        {
            Stop();
            _process.Dispose();
        }
    }

    private static void Check(bool condition, string what)
    {
        if (!condition) throw new Exception("check failed: " + what);
    }
}

// A worker app on the generic host that syncs its notes with BitBoxSync: all the sync-related code
// is in this file and WorkerApp.cs. Run it against a server:
//   dotnet run --project samples/BitBoxSync.Worker -- --BitBoxSync:ServerUrl http://127.0.0.1:8090 --Worker:Identity demo-alice
using BitBoxSync.Worker;
using Microsoft.Extensions.Hosting;

await WorkerApp.Build(args).RunAsync();

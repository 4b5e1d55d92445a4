// notes: a small console notes app whose notes live in its own SQLite database and sync, end-to-end
// encrypted, between instances (devices) of the same user through a BitBoxSync server.
//
//   dotnet run --project server/BitBoxSync.Server.Tool                  # a server on 127.0.0.1:8090
//   dotnet run --project samples/BitBoxSync.Notes -- --dir laptop add "Groceries" "milk, eggs"
//   dotnet run --project samples/BitBoxSync.Notes -- --dir phone sync
//   dotnet run --project samples/BitBoxSync.Notes -- --dir phone list
using BitBoxSync.Notes;

return await NotesCommand.Build(Console.Out).Parse(args).InvokeAsync();

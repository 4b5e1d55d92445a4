// The BitBoxSync demo: two devices (Alice and Bob) syncing end-to-end encrypted data through a
// server, sharing a namespace through an invite, a conflict detected and resolved, and remote writes
// arriving through the long-poll watch. Without --server it starts its own server on 127.0.0.1.
using BitBoxSync.Demo;
using Spectre.Console;

return await DemoCommand.Build(AnsiConsole.Console).Parse(args).InvokeAsync();

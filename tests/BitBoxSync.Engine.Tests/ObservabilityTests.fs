/// The engine's logs, metrics and traces as an operator sees them: OpenTelemetry's in-memory
/// exporters and a capturing logger over two devices syncing on a real server; no secret, logical
/// key or value in any log line.
module BitBoxSync.Engine.Tests.ObservabilityTests

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Diagnostics
open Expecto
open Microsoft.Extensions.Logging
open OpenTelemetry
open OpenTelemetry.Metrics
open OpenTelemetry.Trace
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness

/// Every log entry: category, event ID, level, the formatted message and every structured value.
type CapturedLog = { Category: string; EventId: int; Level: LogLevel; Text: string }

type CapturingProvider() =
    member val Entries = ConcurrentQueue<CapturedLog>()

    interface ILoggerProvider with
        member this.CreateLogger category =
            { new ILogger with
                member _.BeginScope _ = null
                member _.IsEnabled _ = true

                member _.Log(level, eventId, state, error, formatter) =
                    let values =
                        match box state with
                        | :? IReadOnlyList<KeyValuePair<string, obj>> as kvs ->
                            kvs |> Seq.map (fun kv -> $"{kv.Key}={kv.Value}") |> String.concat " "
                        | _ -> ""

                    this.Entries.Enqueue
                        {
                            Category = category
                            EventId = eventId.Id
                            Level = level
                            Text = formatter.Invoke(state, error) + " " + values + " " + string error
                        }
            }

        member _.Dispose() = ()

let tests =
    test "logs, metrics and activities of real passes; no token, DEK, key or value in the logs" {
        use server = start Sqlite
        let metrics = List<Metric>()
        let activities = List<Activity>()

        use meterProvider =
            Sdk.CreateMeterProviderBuilder().AddMeter(SyncTelemetry.Name).AddInMemoryExporter(metrics).Build()

        use tracerProvider =
            Sdk.CreateTracerProviderBuilder().AddSource(SyncTelemetry.Name).AddInMemoryExporter(activities).Build()

        let provider = new CapturingProvider()
        use loggerFactory = LoggerFactory.Create(fun b -> b.AddProvider(provider).SetMinimumLevel(LogLevel.Trace) |> ignore)
        let store = new MemoryStore()

        use a =
            EngineTests.deviceWith server "alice" store (Merges.NoMerge()) (fun o -> o.LoggerFactory <- loggerFactory)

        use b = EngineTests.device server "alice" (new MemoryStore()) (Merges.NoMerge())
        a.Write("a", "plaintext-value-one")
        a.Write("b", "plaintext-value-two")
        a.Sync()
        b.Sync()
        b.Write("a", "plaintext-value-three")
        b.Sync()
        a.Write("a", "plaintext-value-four")
        a.Sync() // a conflict: NoMerge
        meterProvider.ForceFlush() |> ignore
        tracerProvider.ForceFlush() |> ignore

        // Logs: stable event IDs, the engine's category.
        let entries = List.ofSeq provider.Entries
        let ids = entries |> List.filter (fun e -> e.Category = "BitBoxSync.Engine") |> List.map (fun e -> e.EventId) |> Set.ofList
        for id in [ 1; 2; 5; 11 ] do
            Expect.contains ids id $"event {id} (pass started, finished, conflict, session ready)"

        // No secret, key or value anywhere in what was logged.
        let identity = (store :> IStore).LoadIdentityAsync(a.Engine.KeyId).AsTask() |> await
        let ns = (store :> IStore).ListNamespacesAsync(a.Engine.KeyId).AsTask() |> await |> Seq.head
        let all = entries |> List.map (fun e -> e.Text) |> String.concat "\n"

        for secret, what in
            [
                identity.AccessToken, "the bearer token"
                Convert.ToHexStringLower ns.Dek, "the DEK (hex)"
                Convert.ToBase64String ns.Dek, "the DEK (base64)"
                "plaintext-value", "a value"
                "\"a\"", "a logical key"
            ] do
            Expect.isFalse (all.Contains(secret, StringComparison.Ordinal)) $"{what} is not logged"

        // Metrics.
        let names = metrics |> Seq.map (fun m -> m.Name) |> Set.ofSeq

        for name in
            [
                "bitboxsync.sync.passes"
                "bitboxsync.sync.pass.duration"
                "bitboxsync.items.uploaded"
                "bitboxsync.items.downloaded"
                "bitboxsync.bytes.uploaded"
                "bitboxsync.conflicts"
                "bitboxsync.uploads.pending"
            ] do
            Expect.contains names name "a documented instrument"

        let sum name =
            metrics
            |> Seq.filter (fun m -> m.Name = name)
            |> Seq.sumBy (fun m ->
                let mutable total = 0L

                for p in m.GetMetricPoints() do
                    total <- total + p.GetSumLong()

                total)

        Expect.isGreaterThanOrEqual (sum "bitboxsync.items.uploaded") 3L "three uploads counted"
        Expect.isGreaterThanOrEqual (sum "bitboxsync.conflicts") 1L "the conflict counted"

        // Activities: one per pass, with the HTTP calls as its children.
        let passes = activities |> Seq.filter (fun x -> x.OperationName = "bitboxsync.sync") |> List.ofSeq
        Expect.isGreaterThanOrEqual passes.Length 4 "an activity per pass"

        let children =
            activities
            |> Seq.filter (fun x -> passes |> List.exists (fun p -> x.ParentSpanId = p.SpanId))
            |> Seq.map (fun x -> x.DisplayName)
            |> Set.ofSeq

        Expect.contains children "PUT /v1/kv/{id}/{id}" "an upload under its pass"
        Expect.contains children "GET /v1/namespaces/mine" "the namespace list under its pass"

        let put = activities |> Seq.find (fun x -> x.DisplayName = "PUT /v1/kv/{id}/{id}")
        Expect.equal (put.GetTagItem "http.response.status_code") (box 200) "status tag"
        Expect.equal put.Kind ActivityKind.Client "a client span"
    }

module BitBoxSync.Tests.ProtocolTests

open Expecto

let tests = testList "protocol" []

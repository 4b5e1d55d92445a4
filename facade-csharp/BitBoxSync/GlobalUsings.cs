// Short names for the protocol's constrained identifiers, shared by the engine's files.
global using KeyId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.KeyIdKind>;
global using NamespaceId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.NamespaceIdKind>;
global using ItemId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.ItemIdKind>;
global using Dek = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.DekKind>;

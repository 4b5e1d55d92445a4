global using BitBoxSync.Protocol;
global using BitBoxSync.Server.Core;
global using KeyId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.KeyIdKind>;
global using NamespaceId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.NamespaceIdKind>;
global using InviteId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.InviteIdKind>;
global using ItemId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.ItemIdKind>;
global using JoinRequestHash = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.JoinRequestHashKind>;
global using Challenge = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.ChallengeKind>;

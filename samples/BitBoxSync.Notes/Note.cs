namespace BitBoxSync.Notes;

/// <summary>A note as the app stores it. Deleting keeps a tombstone so the deletion syncs too.</summary>
public sealed record Note(string Title, string Body, bool Deleted = false);

/// <summary>The app's merge rules (pure functions: easy to test, see docs/testing-merges.md).</summary>
public static class NoteMerges
{
    /// <summary>
    /// Field by field: a field changed on one side only takes that side; the same change on both sides
    /// is kept; different changes to the same field are a conflict the user resolves. Without a base,
    /// equal notes merge and different ones conflict. A deletion wins over an edit of the other fields.
    /// </summary>
    public static MergeResult<Note> ThreeWay(MergeInput<Note> input)
    {
        var (local, remote) = (input.Local, input.Remote);
        if (local == remote) return MergeResult<Note>.Resolved(local);
        if (!input.HasBase || input.Base is null) return MergeResult<Note>.Unresolved;
        var b = input.Base;
        if (!Field(b.Title, local.Title, remote.Title, out var title) || !Field(b.Body, local.Body, remote.Body, out var body))
            return local.Deleted || remote.Deleted
                ? MergeResult<Note>.Resolved(local.Deleted ? local : remote)
                : MergeResult<Note>.Unresolved;
        return MergeResult<Note>.Resolved(new Note(title, body, local.Deleted || remote.Deleted));
    }

    /// <summary>
    /// The list of note keys: a grow-only set (keys are never removed, deletions are tombstones), so the
    /// union is the merge and it never conflicts. Sorted for a stable encoding.
    /// </summary>
    public static MergeResult<string[]> Union(MergeInput<string[]> input) =>
        MergeResult<string[]>.Resolved(input.Local.Union(input.Remote).Distinct().Order(StringComparer.Ordinal).ToArray());

    private static bool Field(string @base, string local, string remote, out string merged)
    {
        merged = local == @base ? remote : remote == @base || remote == local ? local : "";
        return local == @base || remote == @base || remote == local;
    }
}

namespace BitBoxSync.Notes;

/// <summary>A note as the app stores it. Deleting keeps a tombstone so the deletion syncs too.</summary>
public sealed record Note(string Title, string Body, bool Deleted = false);

/// <summary>The app's merge rules (pure functions: easy to test, see docs/testing-merges.md).</summary>
public static class NoteMerges
{
    /// <summary>
    /// Field by field (title, body, deleted): a field changed on one side only takes that side; the
    /// same change on both sides is kept; different changes to the same text field are a conflict the
    /// user resolves, unless one side deleted the note (the deletion wins). Without a base, equal notes
    /// merge and different ones conflict. Symmetric in local and remote, so devices converge.
    /// </summary>
    public static MergeResult<Note> ThreeWay(MergeInput<Note> input)
    {
        var (local, remote) = (input.Local, input.Remote);
        if (local == remote) return MergeResult<Note>.Resolved(local);
        if (!input.HasBase || input.Base is null) return MergeResult<Note>.Unresolved;
        var b = input.Base;
        var deleted = local.Deleted == b.Deleted ? remote.Deleted : local.Deleted;
        if (Field(b.Title, local.Title, remote.Title, out var title) && Field(b.Body, local.Body, remote.Body, out var body))
            return MergeResult<Note>.Resolved(new Note(title, body, deleted));
        return (local.Deleted, remote.Deleted) switch
        {
            (true, false) => MergeResult<Note>.Resolved(local),
            (false, true) => MergeResult<Note>.Resolved(remote),
            (true, true) => MergeResult<Note>.Resolved(Order(local, remote)),
            _ => MergeResult<Note>.Unresolved,
        };
    }

    /// <summary>Of two deleted notes, the one whose text sorts last (any fixed choice keeps merges symmetric).</summary>
    private static Note Order(Note x, Note y) =>
        string.CompareOrdinal(x.Title + "\n" + x.Body, y.Title + "\n" + y.Body) >= 0 ? x : y;

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

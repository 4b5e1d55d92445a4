namespace BitBoxSync.Notes;

/// <summary>A note as the app stores it. Deleting removes it (the engine's key directory carries the deletion).</summary>
public sealed record Note(string Title, string Body);

/// <summary>The app's merge rules (pure functions: easy to test, see docs/testing-merges.md).</summary>
public static class NoteMerges
{
    /// <summary>
    /// Field by field (title, body): a field changed on one side only takes that side; the same change
    /// on both sides is kept; different changes to the same field are a conflict the user resolves.
    /// Without a base, equal notes merge and different ones conflict. Symmetric in local and remote, so
    /// devices converge. (Deletions are not values: the collection's delete policy decides them.)
    /// </summary>
    public static MergeResult<Note> ThreeWay(MergeInput<Note> input)
    {
        var (local, remote) = (input.Local, input.Remote);
        if (local == remote) return MergeResult<Note>.Resolved(local);
        if (!input.HasBase || input.Base is null) return MergeResult<Note>.Unresolved;
        var b = input.Base;
        return Field(b.Title, local.Title, remote.Title, out var title) && Field(b.Body, local.Body, remote.Body, out var body)
            ? MergeResult<Note>.Resolved(new Note(title, body))
            : MergeResult<Note>.Unresolved;
    }

    private static bool Field(string @base, string local, string remote, out string merged)
    {
        merged = local == @base ? remote : remote == @base || remote == local ? local : "";
        return local == @base || remote == @base || remote == local;
    }
}

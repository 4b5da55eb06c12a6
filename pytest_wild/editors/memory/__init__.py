"""Memory-based editors: the weights stay as they are and an edit is kept in a memory that a
forward hook consults at inference (GRACE's codebook, WISE's side memory). Each memory is a
part of the sequence's `EditorState`, attached to the model while it holds anything."""

"""Archives of changed files: safe extraction of untrusted tar streams."""

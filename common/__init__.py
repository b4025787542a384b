"""The lowest layer, imported by data/, models/, trainer/ and agents/ and importing none of
them: the user-error types (errors), option merging (options), seed arithmetic (seeding) and
how this project starts mpirun (mpirun)."""

"""The one exception type for problems a user can fix (bad file, bad key, missing folder)."""


class MedsegError(Exception):
    """A user-facing problem. The CLI prints it as one line and exits with status 2.

    Messages name the file or key first, then the problem, e.g. ``"a.nii.gz: expected a 3D image"``.
    """

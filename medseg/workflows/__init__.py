"""What the training commands do, as library functions: ``train``, ``pretrain`` and ``compare`` (the
demo trains through them too). Each validates everything that can fail on user input before it creates
a run folder, then acts. None imports another."""

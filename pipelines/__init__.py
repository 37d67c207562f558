"""The shipped pipelines: YAML configs installed with medseg as ``medseg.pipelines``, so that
``medseg train hippocampus_patch --data DIR`` finds them by name in a pip or Docker installation."""

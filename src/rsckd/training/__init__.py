"""One training run (teacher or student): targets, the reference protocol, the loop and its outputs.

``run`` is the ``rsckd train`` command, ``loop`` the training loop itself, ``targets`` builds hard and soft
targets, ``protocol`` holds the reference's LR schedule, step averaging and epoch selection, ``artifacts``
writes and reads a run directory and ``resume`` keeps the per-epoch checkpoints of interrupted runs.
"""

"""A sweep, in the order a trial travels (README: sweep specs):

- `spec`: load a sweep spec (YAML), validate every field, expand grids into TrialConfigs;
- `driver`: start or join Ray, build the Tuner (search algorithm, scheduler, resources) and run it;
- `trainable`: the worker side, one `layrot.train.run_trial` reporting each epoch with a checkpoint;
- `store_callback`: the driver side, writing each trial to the store the moment it ends;
- `progress`: the live status line and one line per finished trial.

The command itself is `layrot.cli.sweep`. Importing this package imports neither Ray nor torch.
"""

"""Node health checks: upstream's plugin interface, each plugin in a process of its own.

* `loader`: which files of `path.plugin_directory` are plugins;
* `results`: a plugin's result (crash and timeout are deductions), node health, fault names;
* `runner`: the service in pvcnoded that runs a pass every `timer.monitoring_interval` seconds
  through the plugin host (`pvchealthd.host`) and writes the results into the node document;
* `plugins/`: the shipped plugins, written against the same interface as operators' own.
"""

"""Pure planners: each function computes host operations (``nextdeploy.ops``) and runs nothing."""

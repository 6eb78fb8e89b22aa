"""Pure planners: each function computes host operations (``nextdeploy.plans.ops``) and runs nothing."""

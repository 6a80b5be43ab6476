"""Lowering: our build pipeline around TVM's, and the rewrites it adds to lowered Relax."""

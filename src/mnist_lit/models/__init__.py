"""Networks: plain ``nn.Module``s, one file each. Add one as ``<name>.py`` here plus
``conf/model/<name>.yaml`` naming it (``_target_: mnist_lit.models.<name>.<Class>``)."""

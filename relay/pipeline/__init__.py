"""This package provides the request pipeline every front door shares: beginning a Call, reading its body,
the shared steps (model, limits, plugins, owned resources), forwarding with failover, relaying answers back
through the door's encoder (streams event by event), streamed uploads, and noticing a caller who hangs up."""

"""This package provides the request pipeline every front door shares: the Call, forwarding with failover,
relaying bodies back (streams event by event), and noticing a caller who hangs up."""

"""The decision core: pure functions of (facts, now). No Redis, no dramatiq, no clock reads.

- facts.py: what decisions are made on (read by the store), with the versions to guard on;
- decision.py: the Decision a rule returns, which the store applies atomically;
- events.py: what an incoming event decides (`decide_event`, `decide_key_rotation`);
- install.py: whether a token may be installed (`check_install`) and what installing it
  decides (`decide_install`);
- replacement.py: which tokens a cause dooms, and how a replacement's reasons merge;
- replacing.py: the replacement rule (open or extend, urgency, the certificate, who is told).

The expiry scan's decision (`decide_scan`) lives beside its threshold arithmetic in
scheduler/expiry.py, since imports go scheduler -> worker.
"""

//! Port contract suites (feature `testkit`): one per port, run against every adapter.

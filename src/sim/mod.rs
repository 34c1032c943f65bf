//! The NCP API simulator.

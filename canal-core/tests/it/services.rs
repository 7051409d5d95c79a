//! Proves the test services are real (owned by the services helper).

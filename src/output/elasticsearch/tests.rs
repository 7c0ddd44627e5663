//! Unit tests of the Elasticsearch output pieces (buffer, response, hosts, slots).

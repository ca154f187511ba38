"""The synthetic data generator's action API: generate, validate a schema, score quality."""

//! Document filters of web-scale pretraining pipelines.

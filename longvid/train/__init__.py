"""Training engine: sequential clip streams, schedules, losses, distributed."""

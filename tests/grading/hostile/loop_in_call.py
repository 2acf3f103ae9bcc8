# task: ch1_compression/task4_batching
# mode: append
"""HOSTILE: schedule_batches never returns (request_latencies is correct)."""


def schedule_batches(arrival_times, max_batch_size, max_wait):
    while True:
        pass

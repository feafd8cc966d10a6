"""Summaries of a period of history: the `summaries:` jobs (`settings`), their cron
schedule (`cron`, `scheduler`), the timeline read from history (`timeline`),
the map-reduce plan within the model's limits (`plan`) and running a job (`runner`).
"""

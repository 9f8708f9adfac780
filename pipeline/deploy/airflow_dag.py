"""Airflow DAG: the musicrec pipeline once a day, through the same CLI.

Copy to Airflow's dags/ folder and set the Airflow Variables
``musicrec_home`` (checkout with .venv), ``musicrec_workdir``,
``musicrec_playlogs``, ``musicrec_audio`` and ``musicrec_config``. The
pipeline does its own caching, resuming and locking, so the DAG is one task;
``max_active_runs=1`` avoids queueing runs behind the lock.
"""
import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG(
    dag_id="musicrec_pipeline",
    schedule="0 3 * * *",
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=10)},
    tags=["musicrec"],
) as dag:
    BashOperator(
        task_id="run_pipeline",
        bash_command=(
            "cd {{ var.value.musicrec_home }} && "
            ".venv/bin/musicrec run --playlogs {{ var.value.musicrec_playlogs }} "
            "--audio {{ var.value.musicrec_audio }} --config {{ var.value.musicrec_config }} "
            "--workdir {{ var.value.musicrec_workdir }}"),
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        append_env=True,
        execution_timeout=dt.timedelta(hours=6),
    )

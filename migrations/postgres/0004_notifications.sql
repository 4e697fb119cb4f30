-- Alert notifications Alertmanager delivered, kept as part of the audit trail.
CREATE TABLE notifications (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    receiver    text NOT NULL,
    status      text NOT NULL,
    alertname   text,
    labels      jsonb NOT NULL,
    annotations jsonb NOT NULL,
    starts_at   timestamptz,
    ends_at     timestamptz
);
CREATE INDEX notifications_received ON notifications (received_at);

-- The seed's step-4 INSERT, verbatim (scripts/smoke.sh runs it; tests include it).
INSERT INTO outbox_events
(id,event_type,aggregate_type,aggregate_id,payload,created_at,publish_attempts,last_error,published_at,idempotency_key,status)
VALUES
(
  gen_random_uuid(),
  'game.finished',
  'game',
  '11111111-1111-1111-1111-111111111111',
  jsonb_build_object('game_id','11111111-1111-1111-1111-111111111111','chat_id',-5056821738),
  now(),
  0,
  NULL,
  NULL,
  concat('demo-', gen_random_uuid()),
  'new'
);

DROP EVENT TRIGGER IF EXISTS pgrules_ddl;
CREATE EVENT TRIGGER pgrules_ddl ON ddl_command_end EXECUTE FUNCTION pgrules._notify_ddl();
